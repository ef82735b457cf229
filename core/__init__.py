"""Vocabulary every baihua package shares (errors, atomic files, the vector-space identity); it
imports nothing of baihua, so encoder, whitening, index, eval and app can all depend on it."""
