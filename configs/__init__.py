"""Default settings and model presets, shipped as package data."""

import importlib.resources
from pathlib import Path


def config_dir() -> Path:
    """The shipped `configs/` folder; reading it imports nothing heavy (`--help` stays fast)."""
    return Path(str(importlib.resources.files(__name__)))
