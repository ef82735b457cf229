"""The payload index of the document database: one row per scalar top-level payload field, so that
a filter (``filters.py``) becomes an indexed SQL query for the matching ids instead of a parse of
every stored payload.

Rows are ``(doc_id, key, kind, value)`` with the kinds of the filter language: "str", "num"
(INTEGER or REAL, compared numerically) and "bool" (0/1). Nulls, lists and objects get no row: no
filter condition but a negation can match them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

from baihua.index.filters import And, Compare, Filter, Not, Scalar, kind

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS fields (doc_id INTEGER NOT NULL, key TEXT NOT NULL, "
    "kind TEXT NOT NULL, value)",
    "CREATE INDEX IF NOT EXISTS fields_lookup ON fields (key, kind, value)",
    "CREATE INDEX IF NOT EXISTS fields_doc ON fields (doc_id)",
)
INSERT = "INSERT INTO fields (doc_id, key, kind, value) VALUES (?, ?, ?, ?)"

_SQL_OPS = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
_INT_BOUND = 2**63

Row = tuple[int, str, str, Scalar]
Query = tuple[str, list[Scalar]]


def field_rows(doc_id: int, payload: str) -> Iterator[Row]:
    """The index rows of one document's payload JSON."""
    for key, value in json.loads(payload).items():
        value_kind = kind(value)
        if value_kind is not None:
            yield doc_id, key, value_kind, _stored(value)


def to_sql(filter: Filter, *, among: str | None = None) -> Query:
    """A SELECT of the ids of the documents that match, and its parameters; with ``among`` (a
    table of one column, ``id``), of the matching ids in that table only, each condition
    looked up by document id (a few candidates cost a few index probes, not every match)."""
    if isinstance(filter, Compare):
        return _compare(filter, among)
    if isinstance(filter, Not):
        sql, params = to_sql(filter.part, among=among)
        universe = "SELECT id FROM documents" + (f" WHERE id IN {among}" if among else "")
        return f"{universe} EXCEPT SELECT * FROM ({sql})", params
    parts = [to_sql(p, among=among) for p in filter.parts]
    joiner = " INTERSECT " if isinstance(filter, And) else " UNION "
    sql = joiner.join(f"SELECT * FROM ({part_sql})" for part_sql, _ in parts)
    return sql, [param for _, part_params in parts for param in part_params]


def _compare(filter: Compare, among: str | None) -> Query:
    base = "SELECT doc_id FROM fields WHERE key = ? AND "
    if among:  # probe by document: the planner would rather walk every match of the key
        base = f"SELECT doc_id FROM fields INDEXED BY fields_doc WHERE doc_id IN {among} AND "
        base += "key = ? AND "
    if filter.op == "in":
        assert isinstance(filter.value, tuple)
        values = filter.value
    else:
        assert not isinstance(filter.value, tuple)
        values = (filter.value,)
    if filter.op in _SQL_OPS:
        value = values[0]
        return base + f"kind = ? AND value {_SQL_OPS[filter.op]} ?", [
            filter.key,
            kind(value) or "",
            _stored(value),
        ]
    by_kind: dict[str, list[Scalar]] = {}
    for value in values:
        by_kind.setdefault(kind(value) or "", []).append(_stored(value))
    if not by_kind:  # an empty $in
        return "SELECT doc_id FROM fields WHERE 0", []
    terms: list[str] = []
    params: list[Scalar] = [filter.key]
    for value_kind, stored in by_kind.items():
        terms.append(f"(kind = ? AND value IN ({', '.join('?' * len(stored))}))")
        params += [value_kind, *stored]
    return base + f"({' OR '.join(terms)})", params


def _stored(value: Scalar) -> Scalar:
    """The column value: booleans as 0/1; integers beyond SQLite's 64 bits as REAL."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int) and not -_INT_BOUND <= value < _INT_BOUND:
        return float(value)
    return value
