"""The filter language: every operator and combination against an independent reading of the
JSON, through the FAISS store's payload index; malformed filters raise FilterError."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from baihua.core.errors import BaihuaError
from baihua.index import FaissStore, FilterError
from baihua.index.filters import And, Compare, Not, parse_filter
from tests.index.support import brute_force, reference_matches, unit_vectors

KEYS = ["a", "b", "c"]
scalars = st.one_of(
    st.booleans(),
    st.integers(-2, 2),
    st.sampled_from([0.5, 1.0, -1.5]),
    st.sampled_from(["x", "y", "1", "中"]),
)
payload_values = st.one_of(st.none(), scalars, st.lists(scalars, max_size=2))
payloads = st.dictionaries(st.sampled_from(KEYS), payload_values, max_size=3)
bounds = st.one_of(st.integers(-2, 2), st.sampled_from([0.5, -1.5]), st.sampled_from(["x", "y"]))
operator_pairs = st.one_of(
    st.tuples(st.sampled_from(["$eq", "$ne"]), scalars),
    st.tuples(st.sampled_from(["$in", "$nin"]), st.lists(scalars, max_size=3)),
    st.tuples(st.sampled_from(["$gt", "$gte", "$lt", "$lte"]), bounds),
)
conditions = st.one_of(scalars, st.lists(operator_pairs, min_size=1, max_size=2).map(dict))
leaves = st.dictionaries(st.sampled_from(KEYS), conditions, min_size=1, max_size=2)
filters = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, min_size=1, max_size=3).map(lambda parts: {"$and": parts}),
        st.lists(inner, min_size=1, max_size=3).map(lambda parts: {"$or": parts}),
    ),
    max_leaves=6,
)


@settings(max_examples=150, deadline=None)
@given(stored=st.lists(payloads, min_size=1, max_size=30), filter=filters)
def test_count_and_search_keep_exactly_the_documents_the_filter_matches(
    stored: list[dict[str, Any]], filter: dict[str, Any]
) -> None:
    n = len(stored)
    vectors = unit_vectors(n, 8)
    store = FaissStore(8)
    store.add(np.arange(n), vectors, ["t"] * n, stored)
    matching = np.array([i for i, p in enumerate(stored) if reference_matches(p, filter)], int)
    queries = unit_vectors(2, 8, seed=1)

    hits = store.search(queries, n, filter=filter)

    assert store.count(filter) == len(matching)
    for row in hits:
        assert sorted(h.id for h in row) == matching.tolist()
    if len(matching):
        expected_ids, _ = brute_force(matching, vectors[matching], queries, n)
        assert [[h.id for h in row] for row in hits] == expected_ids.tolist()


@settings(max_examples=150, deadline=None)
@given(
    stored=st.lists(payloads, min_size=1, max_size=30),
    filter=filters,
    candidates=st.sets(st.integers(0, 35), max_size=12),
)
def test_the_candidates_look_up_reads_the_filter_as_the_full_query_does(
    stored: list[dict[str, Any]], filter: dict[str, Any], candidates: set[int]
) -> None:
    """A filtered search over many documents asks which of its candidates match, one look-up
    per candidate (ids not stored among them match nothing)."""
    n = len(stored)
    store = FaissStore(8)
    store.add(np.arange(n), unit_vectors(n, 8), ["t"] * n, stored)
    tree = parse_filter(filter)
    assert tree is not None

    found = store._db.matching_among(tree, candidates)

    assert found == {i for i in candidates if i < n and reference_matches(stored[i], filter)}


def test_operators_on_a_small_catalogue() -> None:
    stored = [
        {"lang": "zh", "price": 5, "tags": ["a"]},
        {"lang": "en", "price": 12.5},
        {"lang": "zh", "price": 20, "draft": True},
        {"lang": "fr", "price": "n/a"},
        {},
    ]
    store = FaissStore(4)
    store.add(np.arange(5), unit_vectors(5, 4), ["t"] * 5, stored)

    def ids(filter: dict[str, Any]) -> list[int]:
        return sorted(h.id for h in store.search(np.ones((1, 4)), 10, filter=filter)[0])

    assert ids({"lang": "zh"}) == [0, 2]
    assert ids({"lang": {"$ne": "zh"}}) == [1, 3, 4]  # $ne also matches a missing key
    assert ids({"price": {"$gte": 5, "$lt": 20}}) == [0, 1]  # ranges compare numbers only
    assert ids({"price": {"$gt": "a"}}) == [3]  # ... or strings with strings
    assert ids({"lang": {"$in": ["en", "fr"]}}) == [1, 3]
    assert ids({"lang": {"$nin": ["en", "fr"]}}) == [0, 2, 4]
    assert ids({"$or": [{"draft": True}, {"price": {"$lt": 10}}]}) == [0, 2]
    assert ids({"$and": [{"lang": "zh"}, {"draft": {"$ne": True}}]}) == [0]
    assert ids({"tags": {"$ne": "a"}}) == [0, 1, 2, 3, 4]  # a list equals no scalar
    assert ids({}) == [0, 1, 2, 3, 4]


def test_filter_distinguishes_booleans_from_integers() -> None:
    store = FaissStore(4)
    store.add([1, 2], np.eye(4, dtype=np.float32)[:2], ["a", "b"], [{"x": True}, {"x": 1}])

    hits = store.search(np.ones((1, 4), np.float32), 5, filter={"x": 1})

    assert [h.id for h in hits[0]] == [2]


def test_parse_builds_the_tree_the_engines_translate() -> None:
    assert parse_filter({"a": 1, "b": {"$gte": 2, "$nin": [3]}}) == And(
        (Compare("a", "eq", 1), Compare("b", "gte", 2), Not(Compare("b", "in", (3,))))
    )
    assert parse_filter({"$or": [{"a": 1}, {}]}) is None  # one branch matches everything
    assert parse_filter({}) is None


@pytest.mark.parametrize(
    ("filter", "message"),
    [
        ({"a": {"$regex": "x"}}, r"filter\['a'\]\['\$regex'\]: unknown operator"),
        ({"a": {"nested": 1}}, "objects and lists are not compared"),
        ({"a": [1, 2]}, r"use \$in"),
        ({"a": None}, "string, number or boolean"),
        ({"$or": []}, "non-empty list"),
        ({"$and": {"a": 1}}, "non-empty list"),
        ({"$not": {"a": 1}}, r"use \$and or \$or"),
        ({"a": {"$gt": True}}, "number or a string"),
        ({"a": {"$in": "x"}}, "list of values"),
        ({"a": {}}, "empty condition"),
        ({"a": float("inf")}, "not a JSON number"),
        ({"a": 2**64}, "64 bits"),
        ({'a"b': 1}, "without quotes"),
        (["a"], "must be an object"),
    ],
)
def test_malformed_filters_raise_filter_error_naming_the_part(filter: Any, message: str) -> None:
    store = FaissStore(4)

    with pytest.raises(FilterError, match=message):
        store.search(np.ones((1, 4)), 1, filter=filter)
    with pytest.raises(FilterError, match=message):
        store.count(filter)


def test_filter_error_is_a_user_error() -> None:
    assert issubclass(FilterError, BaihuaError)
    assert issubclass(FilterError, ValueError)


def test_deeply_nested_filters_are_refused() -> None:
    filter: dict[str, Any] = {"a": 1}
    for _ in range(40):
        filter = {"$and": [filter]}

    with pytest.raises(FilterError, match="nest at most"):
        parse_filter(filter)
