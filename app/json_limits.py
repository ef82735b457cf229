"""Checks on client JSON that the store and the responses rely on: valid Unicode, finite numbers,
integers that fit in 64 bits, bounded nesting and size.

Python's JSON parser accepts lone surrogates (`"\\ud800"`), `NaN` and integers of any size, none
of which SQLite, orjson or a strict client can take back; a payload nested hundreds deep breaks the
serialisers on the way out. Refusing them at write time (422 naming the place) keeps every stored
document readable.
"""

from __future__ import annotations

import math
from typing import Any

import orjson

Loc = tuple[str | int, ...]
INT64_MIN, UINT64_MAX = -(2**63), 2**64 - 1  # what orjson and SQLite's JSON functions take


def lone_surrogate(text: str) -> int | None:
    """Position of the first lone surrogate in `text` (not encodable as UTF-8), or None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        return err.start
    return None


def json_error(value: Any, loc: Loc, *, max_depth: int) -> tuple[Loc, str] | None:
    """The first place in `value` that is not storable JSON, and why; None when all is fine."""
    stack: list[tuple[Any, Loc, int]] = [(value, loc, 0)]
    while stack:
        item, where, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth >= max_depth:
                return where, f"nested deeper than {max_depth} levels (max_payload_depth)"
            children = item.items() if isinstance(item, dict) else enumerate(item)
            for key, child in children:
                if isinstance(key, str) and lone_surrogate(key) is not None:
                    return (
                        where,
                        f"key {key.encode('utf-8', 'backslashreplace')!r} is not valid Unicode",
                    )
                stack.append((child, (*where, key), depth + 1))
        elif isinstance(item, str):
            position = lone_surrogate(item)
            if position is not None:
                return where, f"a lone surrogate at character {position} is not valid Unicode"
        elif isinstance(item, float) and not math.isfinite(item):
            return where, f"{item} is not a JSON number"
        elif isinstance(item, int | float) and not INT64_MIN <= item <= UINT64_MAX:
            # floats too: the schema's bounds (PAYLOAD_SCHEMA) are on numbers, as JSON has them
            return where, "integers must fit in 64 bits (numbers lie within -2**63 .. 2**64 - 1)"
    return None


JSON_VALUE_REF = "#/components/schemas/JsonValue"
_JSON_VALUE: dict[str, Any] = {
    "title": "JsonValue",
    "description": "Any JSON value; numbers lie within -2**63 .. 2**64 - 1.",
    "anyOf": [
        {"type": "string"},
        {"type": "boolean"},
        {"type": "null"},
        {"type": "number", "minimum": INT64_MIN, "maximum": UINT64_MAX},
        {"type": "array", "items": {"$ref": JSON_VALUE_REF}},
        {"type": "object", "additionalProperties": {"$ref": JSON_VALUE_REF}},
    ],
}
PAYLOAD_SCHEMAS: dict[str, dict[str, Any]] = {
    "JsonValue": _JSON_VALUE,
    "Payload": {
        "title": "Payload",
        "description": "A JSON object stored with the document, nested at most "
        "`max_payload_depth` levels and at most `max_payload_bytes` as JSON.",
        "type": "object",
        "additionalProperties": {"$ref": JSON_VALUE_REF},
    },
}
"""What `json_error` lets through, as JSON Schema (depth and size are said in words)."""


def json_size(value: Any) -> int:
    """Bytes of `value` as compact JSON (after `json_error` passed)."""
    return len(orjson.dumps(value))
