"""The errors a store's caller can cause: each carries what went wrong as fields, and its message
says the same in words. Callers that answer them (the HTTP layer, the CLI) read the fields."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from baihua.core.errors import BaihuaError


class StoreInputError(BaihuaError, ValueError):
    """An argument of a store call is malformed; ``argument`` names it ("ids", "vectors",
    "queries", "texts", "payloads", "top_k", ...)."""

    def __init__(self, argument: str, message: str) -> None:
        super().__init__(message)
        self.argument = argument


class StoreSettingError(BaihuaError, ValueError):
    """A store cannot work with one of its settings: ``setting`` names it ("dim", "factory",
    "search_params", "use_gpu", "uri", "path") and ``value`` is what was given."""

    def __init__(self, setting: str, value: object, message: str) -> None:
        super().__init__(message)
        self.setting = setting
        self.value = value


class DuplicateIdError(BaihuaError, ValueError):
    """``add`` got ``ids`` already stored (``stored``) or repeated in the call (not ``stored``);
    ``upsert`` replaces instead."""

    def __init__(self, ids: Iterable[int], *, stored: bool) -> None:
        self.ids = tuple(int(i) for i in ids)
        self.stored = stored
        if stored:
            message = f"ids already stored: {preview(self.ids)}; use upsert() to replace them"
        else:
            message = f"ids repeat within the call: {preview(self.ids)}"
        super().__init__(message)


class IdsExhaustedError(BaihuaError, ValueError):
    """No ``requested`` ids are left above ``last``, the largest id stored or used before (ids
    reach 2**63 - 1); give ids explicitly."""

    def __init__(self, requested: int, last: int) -> None:
        super().__init__(
            f"no {requested} new ids are left: ids end at 2**63 - 1 and {last} is taken or was "
            "used before; give the documents ids yourself"
        )
        self.requested = requested
        self.last = last


class StoreMismatchError(BaihuaError, ValueError):
    """A store was opened with other settings than it was created with: ``recorded`` and
    ``requested`` map each differing setting (dim, factory, index_type, format, fields) to its
    value."""

    def __init__(
        self,
        where: str,
        recorded: Mapping[str, object],
        requested: Mapping[str, object],
        hint: str,
    ) -> None:
        self.where = where
        self.recorded = dict(recorded)
        self.requested = dict(requested)
        super().__init__(
            f"{where} was created with {_settings(recorded)}; asked for {_settings(requested)}. "
            + hint
        )


class StoreLockedError(BaihuaError, RuntimeError):
    """The store directory ``path`` is already open, in this process or another."""

    def __init__(self, path: Path, message: str | None = None) -> None:
        self.path = path
        super().__init__(
            message
            or f"store at {path} is already open (in this or another process); close it first, "
            "one process owns a store"
        )


class StoreCorruptError(BaihuaError, RuntimeError):
    """The files of the store at ``path`` disagree in a way that cannot be repaired from its
    database (missing or older than its index snapshot); the message says what was found and
    what to do."""

    def __init__(self, path: Path, message: str) -> None:
        super().__init__(message)
        self.path = path


def preview(values: Sequence[Any] | npt.NDArray[Any], limit: int = 10) -> str:
    """The first ``limit`` values for an error message, and how many more there are."""
    shown = [v.item() if isinstance(v, np.generic) else v for v in list(values)[:limit]]
    return f"{shown}" + (f" and {len(values) - limit} more" if len(values) > limit else "")


def _settings(values: Mapping[str, object]) -> str:
    return ", ".join(f"{name}={value!r}" for name, value in values.items())
