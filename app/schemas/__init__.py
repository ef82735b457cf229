"""Request and response bodies of the HTTP API, one module per dialect: `native` (/embed —
which also takes TEI's body — and /search), `documents`, `openai` (/v1) and `tei` (TEI's root
route, /tokenize, /decode and its error shape), all on `common`."""
