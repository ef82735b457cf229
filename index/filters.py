"""The payload filter language: which documents a search may return.

A filter is a JSON object over a document's top-level payload keys::

    {"lang": "zh"}                                  plain value: equality
    {"price": {"$gte": 10, "$lt": 20}}              operators on one key, all must hold
    {"tag": {"$in": ["a", "b"]}, "draft": {"$ne": true}}   several keys: all must hold
    {"$or": [{"lang": "zh"}, {"lang": "en"}]}       $and / $or over a list of filters

Operators: ``$eq $ne $in $nin $gt $gte $lt $lte``. Values are strings, numbers or booleans
(not null, which Milvus cannot compare in a JSON field); ``$in``/``$nin`` take a list of them;
``$gt``... take a number or a string and compare only with values of the same kind. Kinds never
mix: ``true`` is not ``1``, ``"1"`` is not ``1``, and a null, list or object in a payload equals
no value. ``$ne``/``$nin`` are the negations of ``$eq``/``$in``, so they also match documents
without the key. An empty filter matches everything.

``parse_filter`` turns the JSON into a small tree (``Compare``, ``And``, ``Or``, ``Not``) that each
engine translates to its own query language (SQL for the FAISS store's document database, a
boolean expression for Milvus).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from baihua.core.errors import BaihuaError
from baihua.index.validation import MAX_ID

Scalar = str | int | float | bool
Kind = Literal["str", "num", "bool"]
RangeOp = Literal["gt", "gte", "lt", "lte"]
CompareOp = Literal["eq", "in"] | RangeOp

OPERATORS = ("$eq", "$ne", "$in", "$nin", "$gt", "$gte", "$lt", "$lte")
_MAX_DEPTH = 32
_MAX_NODES = 1024


class FilterError(BaihuaError, ValueError):
    """A filter that is not in the filter language, or not allowed where it was given; ``where``
    is the part that is wrong (``filter['price']['$gt']``), the message says what to fix."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(message)
        self.where = where


@dataclass(frozen=True)
class Compare:
    """``payload[key] <op> value``; for "in", ``value`` is a tuple of scalars."""

    key: str
    op: CompareOp
    value: Scalar | tuple[Scalar, ...]


@dataclass(frozen=True)
class And:
    parts: tuple[Filter, ...]


@dataclass(frozen=True)
class Or:
    parts: tuple[Filter, ...]


@dataclass(frozen=True)
class Not:
    part: Filter


Filter = Compare | And | Or | Not


def kind(value: object) -> Kind | None:
    """The kind a JSON value is compared as; None for null, lists and objects."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "num"
    if isinstance(value, str):
        return "str"
    return None


def parse_filter(filter: object) -> Filter | None:
    """The filter as a tree, or None when it matches everything (None or ``{}``).

    Raises ``FilterError`` naming the part of the filter that is wrong.
    """
    if filter is None:
        return None
    return _Parser().parse_object(filter, "filter", 0)


class _Parser:
    def __init__(self) -> None:
        self.nodes = 0

    def parse_object(self, value: object, where: str, depth: int) -> Filter | None:
        if not isinstance(value, dict):
            raise FilterError(
                where, f"{where} must be an object of payload key -> condition; got {value!r}"
            )
        if depth > _MAX_DEPTH:
            raise FilterError(where, f"{where}: filters nest at most {_MAX_DEPTH} levels deep")
        parts: list[Filter | None] = []
        for key, condition in value.items():
            if not isinstance(key, str):
                raise FilterError(where, f"{where}: keys must be strings; got {key!r}")
            here = f"{where}[{key!r}]"
            if key in ("$and", "$or"):
                parts.append(self.combination(key, condition, here, depth))
            elif key.startswith("$"):
                raise FilterError(
                    here,
                    f"{here}: unknown operator {key!r} at the top of a filter; use $and or $or "
                    "there, or a payload key",
                )
            else:
                parts.extend(self.conditions(key, condition, here))
        return _conjunction(parts)

    def combination(self, name: str, value: object, where: str, depth: int) -> Filter | None:
        """None when the combination matches everything."""
        if not isinstance(value, list) or not value:
            raise FilterError(where, f"{where} must be a non-empty list of filters; got {value!r}")
        parts = [self.parse_object(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(value)]
        if name == "$and":
            return _conjunction(parts)
        if any(p is None for p in parts):  # one branch matches everything
            return None
        kept = tuple(p for p in parts if p is not None)
        return kept[0] if len(kept) == 1 else self.count(Or(kept))

    def conditions(self, key: str, condition: object, where: str) -> list[Filter]:
        _check_key(key, where)
        if not isinstance(condition, dict):
            return [self.count(Compare(key, "eq", _scalar(condition, where)))]
        if not condition:
            raise FilterError(
                where, f"{where}: empty condition; give a value or an operator such as $eq"
            )
        parts: list[Filter] = []
        for op, operand in condition.items():
            here = f"{where}[{op!r}]"
            if op not in OPERATORS:
                hint = (
                    ""
                    if isinstance(op, str) and op.startswith("$")
                    else " (a condition is a scalar value or an object of operators; objects "
                    "and lists are not compared for equality)"
                )
                raise FilterError(
                    here,
                    f"{here}: unknown operator {op!r}; use one of {', '.join(OPERATORS)}{hint}",
                )
            if op in ("$eq", "$ne"):
                node: Filter = Compare(key, "eq", _scalar(operand, here))
            elif op in ("$in", "$nin"):
                if not isinstance(operand, list):
                    raise FilterError(here, f"{here} must be a list of values; got {operand!r}")
                values = tuple(_scalar(v, f"{here}[{i}]") for i, v in enumerate(operand))
                node = Compare(key, "in", values)
            else:
                bound = _scalar(operand, here)
                if kind(bound) not in ("num", "str"):
                    raise FilterError(here, f"{here} must be a number or a string; got {operand!r}")
                node = Compare(key, op[1:], bound)  # type: ignore[arg-type]
            self.count(node)
            parts.append(Not(node) if op in ("$ne", "$nin") else node)
        return parts

    def count(self, node: Filter) -> Filter:
        self.nodes += 1
        if self.nodes > _MAX_NODES:
            raise FilterError("filter", f"filter has more than {_MAX_NODES} conditions")
        return node


def _conjunction(parts: list[Filter | None]) -> Filter | None:
    kept = tuple(p for p in parts if p is not None)
    if not kept:
        return None
    return kept[0] if len(kept) == 1 else And(kept)


def _check_key(key: str, where: str) -> None:
    if not key or any(c in key for c in '"\\') or not key.isprintable():
        raise FilterError(
            where,
            f"{where}: payload keys in filters must be non-empty and printable, without quotes "
            "or backslashes",
        )


def _scalar(value: object, where: str) -> Scalar:
    if isinstance(value, float) and not math.isfinite(value):
        raise FilterError(where, f"{where}: {value!r} is not a JSON number")
    if (
        isinstance(value, int)
        and not isinstance(value, bool)
        and not -MAX_ID - 1 <= value <= MAX_ID
    ):
        raise FilterError(where, f"{where}: integers in filters must fit in 64 bits; got {value}")
    if kind(value) is None:
        hint = "; use $in for a list of values" if isinstance(value, list) else ""
        raise FilterError(
            where, f"{where} must be a string, number or boolean; got {value!r}{hint}"
        )
    return value  # type: ignore[return-value]
