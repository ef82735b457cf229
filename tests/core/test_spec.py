import dataclasses
import logging

import pytest

from baihua.core.spec import (
    NOTE_FIELDS,
    SPACE_FIELDS,
    EmbeddingSpec,
    SpecError,
    SpecMismatchError,
    check_space,
)

SPEC = EmbeddingSpec(
    model="me5-small",
    weights="a" * 64,
    pooling="last-avg",
    max_length=64,
    query_prefix="query: ",
    passage_prefix="passage: ",
)
CHANGED = {
    "weights": "b" * 64,
    "pooling": "cls",
    "max_length": 128,
    "query_prefix": "",
    "passage_prefix": "",
    "backend": "onnx-int8",
    "dtype": "bfloat16",
    "transform": "c" * 64,
    "n_components": 128,
}


def test_every_field_is_either_compared_or_a_note() -> None:
    names = {f.name for f in dataclasses.fields(EmbeddingSpec)}
    assert names == set(SPACE_FIELDS) | set(NOTE_FIELDS)
    assert set(CHANGED) == set(SPACE_FIELDS)


def test_spec_round_trips_through_its_dict() -> None:
    spec = SPEC.with_transform("c" * 64, 128)
    assert EmbeddingSpec.from_dict(spec.to_dict()) == spec
    assert spec.raw == SPEC


@pytest.mark.parametrize("field", SPACE_FIELDS)
def test_a_difference_in_a_space_field_is_an_error_listing_old_and_new(field: str) -> None:
    current = dataclasses.replace(SPEC, **{field: CHANGED[field]})
    with pytest.raises(SpecMismatchError) as raised:
        check_space(SPEC, current, what="the index at data/index", hint="reembed it")
    assert raised.value.differences == {field: (getattr(SPEC, field), CHANGED[field])}
    message = str(raised.value)
    assert message.startswith("the index at data/index was made in another vector space (")
    assert message.endswith("; reembed it") and f"{field} " in message


def test_every_differing_field_is_listed() -> None:
    current = dataclasses.replace(SPEC, pooling="cls", dtype="bfloat16")
    with pytest.raises(SpecMismatchError, match="pooling 'last-avg' → 'cls', dtype 'float32' →"):
        check_space(SPEC, current, what="x", hint="y")


def test_note_fields_are_logged_and_let_through(caplog: pytest.LogCaptureFixture) -> None:
    current = dataclasses.replace(SPEC, model="/cache/me5-small", library_version="9.9")
    with caplog.at_level(logging.WARNING):
        check_space(SPEC, current, what="the artifact w", hint="")
    assert "the artifact w: model 'me5-small' → '/cache/me5-small'" in caplog.text
    assert "library_version" in caplog.text and "cannot change vectors" in caplog.text


def test_a_partial_record_compares_what_it_has_and_the_model_name(
    caplog: pytest.LogCaptureFixture,
) -> None:
    legacy = {"model": "me5-small", "pooling": "last-avg", "max_length": 64}
    with caplog.at_level(logging.WARNING):
        check_space(legacy, SPEC, what="old artifact", hint="")
    assert "old artifact predates vector-space records: weights, query_prefix" in caplog.text
    with pytest.raises(SpecMismatchError, match="model 'me5-small' → 'all-MiniLM-L6-v2'"):
        check_space(legacy, dataclasses.replace(SPEC, model="all-MiniLM-L6-v2"), what="x", hint="")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([1, 2], "must be a mapping"),
        ({"model": "m"}, "spec lacks weights, pooling, max_length"),
        (SPEC.to_dict() | {"max_length": True}, "max_length has the wrong type"),
        (SPEC.to_dict() | {"transform": 3}, "transform has the wrong type"),
    ],
)
def test_malformed_records_are_spec_errors(data: object, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        EmbeddingSpec.from_dict(data)


def test_summary_names_model_space_and_transform() -> None:
    line = SPEC.with_transform("c" * 64, 128).summary()
    assert line == (
        "model me5-small (weights aaaaaaaaaaaa), pooling last-avg, max_length 64, "
        "torch/float32, transform cccccccccccc k=128"
    )
