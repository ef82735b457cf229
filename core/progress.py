"""Progress: the callback every long job takes (called with the number of items just finished),
and the start and end lines of a slow one-off step."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator

Progress = Callable[[int], None]


@contextlib.contextmanager
def logged_step(logger: logging.Logger, what: str) -> Iterator[None]:
    """A line when `what` starts and one with its time when it ends: a first start builds for
    minutes, and each step should say what it is doing."""
    logger.info("%s …", what)
    start = time.perf_counter()
    yield
    logger.info("%s: done in %.1f s", what, time.perf_counter() - start)
