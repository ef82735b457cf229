"""STS and retrieval evaluation over task folders."""
