"""The progress callback every long job takes: called with the number of items just finished."""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[int], None]
