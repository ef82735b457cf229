"""The payload filter language (index/filters.py) as JSON Schema, so the OpenAPI document states
what `/search`, `GET /documents`, `/documents/count` and `/documents/delete` accept.

JSON Schema cannot say everything the language checks (nesting depth, number of conditions), and
regex engines disagree on Unicode classes; so the HTTP API narrows filters to what the schema says
exactly: keys of printable ASCII (no quotes or backslashes, no leading `$` but `$and`/`$or`),
Latin-1 letters, kana, CJK ideographs or Hangul; numbers within ±2**53; `$and`/`$or` over
non-empty filters. `check_filter_scope` enforces the narrowing; the store checks the rest.
"""

from __future__ import annotations

import re
from typing import Any

from baihua.index.filters import OPERATORS

FILTER_REF = "#/components/schemas/Filter"
MAX_NUMBER = 2**53  # JSON clients keep integers exact up to here
_LETTERS = (
    r"\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u00ff"  # Latin-1 letters
    r"\u3041-\u3096\u3099-\u30ff"  # kana (assigned code points only)
    r"\u4e00-\u9fff\uac00-\ud7a3"  # CJK ideographs, Hangul syllables
)
_FIRST = rf" !#%-\[\]-~{_LETTERS}"  # printable ASCII without " \ and a leading $
_REST = rf" !#-\[\]-~{_LETTERS}"
KEY_PATTERN = rf"^(\$and|\$or|[{_FIRST}][{_REST}]*)$"

_NUMBER: dict[str, Any] = {"type": "number", "minimum": -MAX_NUMBER, "maximum": MAX_NUMBER}
_SCALAR: dict[str, Any] = {"anyOf": [{"type": "string"}, {"type": "boolean"}, _NUMBER]}
_BOUND: dict[str, Any] = {"anyOf": [{"type": "string"}, _NUMBER]}
_LIST: dict[str, Any] = {"type": "array", "items": _SCALAR}
_PARTS: dict[str, Any] = {
    "type": "array",
    "minItems": 1,
    "items": {"$ref": FILTER_REF, "minProperties": 1},
}

FILTER_SCHEMA: dict[str, Any] = {
    "title": "Filter",
    "description": 'Payload filter: {"key": value} is equality; {"key": {"$gte": 1, "$lt": 9}} '
    "operators ($eq $ne $in $nin $gt $gte $lt $lte) must all hold; several keys must all hold; "
    '{"$or": [filter, ...]} and {"$and": [...]} combine filters. Values are strings, numbers '
    "or booleans.",
    "type": "object",
    "propertyNames": {"pattern": KEY_PATTERN},
    "properties": {"$and": _PARTS, "$or": _PARTS},
    "additionalProperties": {
        "anyOf": [
            _SCALAR,
            {
                "type": "object",
                "minProperties": 1,
                "additionalProperties": False,
                "properties": {
                    op: _LIST if op in ("$in", "$nin") else _BOUND if op[1] in "gl" else _SCALAR
                    for op in OPERATORS
                },
            },
        ]
    },
}

_KEY = re.compile(KEY_PATTERN)


def check_filter_scope(filter: Any, where: str = "filter") -> None:
    """ValueError where the filter leaves what FILTER_SCHEMA allows (its keys, the range of its
    numbers, empty filters inside `$and`/`$or`); the store checks the rest of the language."""
    if not isinstance(filter, dict):
        return
    for key, condition in filter.items():
        here = f"{where}[{key!r}]"
        if key in ("$and", "$or"):
            for i, part in enumerate(condition if isinstance(condition, list) else []):
                if part == {}:
                    raise ValueError(f"{here}[{i}]: an empty filter; leave it out")
                check_filter_scope(part, f"{here}[{i}]")
            continue
        if not isinstance(key, str) or not _KEY.match(key):
            raise ValueError(
                f"{here}: filter keys take printable ASCII without quotes or backslashes, "
                "Latin-1 letters, kana, CJK ideographs or Hangul"
            )
        _check_numbers(condition, here)


def _check_numbers(value: Any, where: str) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _check_numbers(item, f"{where}[{key!r}]")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_numbers(item, f"{where}[{i}]")
    elif isinstance(value, int | float) and not isinstance(value, bool) and abs(value) > MAX_NUMBER:
        raise ValueError(f"{where}: numbers in filters must be within ±2**53; got {value}")
