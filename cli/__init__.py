"""The `baihua` command: one module per command group, each command parsing its flags and
calling library code."""
