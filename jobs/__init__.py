"""Offline batch jobs — fit, index build, re-embed, their Ray versions, export: resumable,
checkpointed and silent (the CLI draws their progress bars)."""
