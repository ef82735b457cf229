"""Payload filters: which documents a search may return."""

from __future__ import annotations

from typing import Any


def check_filter(filter: object) -> None:
    if filter is None:
        return
    if not isinstance(filter, dict) or not all(isinstance(k, str) for k in filter):
        raise ValueError(f"filter must be a dict of payload key -> value; got {filter!r}")


def matches(payload: dict[str, Any], filter: dict[str, Any]) -> bool:
    """Whether the payload has each key of the filter with an equal value."""
    # True == 1 in Python but not in JSON: a bool only matches a bool.
    return all(
        key in payload
        and payload[key] == value
        and isinstance(payload[key], bool) == isinstance(value, bool)
        for key, value in filter.items()
    )
