"""Default settings and model presets, shipped as package data."""
