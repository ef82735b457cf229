"""Filters (``filters.py``) as Milvus boolean expressions on the collection's JSON payload field.

Milvus compares JSON values by kind as the filter language does (``payload["x"] == 1`` is false
for ``true`` and for ``"1"``), and its ``!=`` and ``not in`` are true for a missing key or another
kind, which is the language's ``$ne``/``$nin``. A ``not (...)`` over JSON is not supported by the
embedded engine, but the language only negates single comparisons, which map to those two. An
``in`` list must hold one literal type, so mixed lists are split into one ``in`` per type.
"""

from __future__ import annotations

import json

from baihua.index.filters import And, Compare, Filter, Not, Or, Scalar

_OPS = {"eq": "==", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
_NEVER = "id < 0"  # ids are >= 0
_ALWAYS = "id >= 0"


def to_milvus(filter: Filter, field: str = "payload") -> str:
    if isinstance(filter, Compare):
        return _compare(filter, field, negated=False)
    if isinstance(filter, Not):
        assert isinstance(filter.part, Compare), "the filter language only negates comparisons"
        return _compare(filter.part, field, negated=True)
    joiner = " and " if isinstance(filter, And) else " or "
    assert isinstance(filter, And | Or)
    return joiner.join(f"({to_milvus(part, field)})" for part in filter.parts)


def _compare(filter: Compare, field: str, *, negated: bool) -> str:
    target = f"{field}[{json.dumps(filter.key, ensure_ascii=False)}]"
    if filter.op != "in":
        assert not isinstance(filter.value, tuple)
        op = "!=" if negated else _OPS[filter.op]
        assert not negated or filter.op == "eq", "only equality is negated"
        return f"{target} {op} {_literal(filter.value)}"
    assert isinstance(filter.value, tuple)
    groups: dict[type, list[Scalar]] = {}
    for value in filter.value:
        groups.setdefault(type(value), []).append(value)
    if not groups:
        return _ALWAYS if negated else _NEVER
    op, joiner = ("not in", " and ") if negated else ("in", " or ")
    return joiner.join(
        f"{target} {op} [{', '.join(_literal(v) for v in values)}]" for values in groups.values()
    )


def _literal(value: Scalar) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return repr(value)
