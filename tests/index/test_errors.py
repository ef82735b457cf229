"""Errors a store's caller can cause are BaihuaErrors that carry what went wrong as fields, the
same on every engine."""

from __future__ import annotations

from pathlib import Path

import pytest

from baihua.core.errors import BaihuaError
from baihua.index import (
    DuplicateIdError,
    FaissStore,
    FilterError,
    IdsExhaustedError,
    StoreCorruptError,
    StoreInputError,
    StoreLockedError,
    StoreMismatchError,
    StoreSettingError,
)
from baihua.index.filters import parse_filter
from tests.index.engines import open_engine
from tests.index.support import unit_vectors

DIM = 8


@pytest.mark.parametrize(
    "error",
    [
        DuplicateIdError,
        FilterError,
        IdsExhaustedError,
        StoreCorruptError,
        StoreInputError,
        StoreLockedError,
        StoreMismatchError,
        StoreSettingError,
    ],
)
def test_every_index_error_is_a_baihua_error(error: type[Exception]) -> None:
    assert issubclass(error, BaihuaError)


def test_a_duplicate_add_carries_every_stored_id(engine: str, tmp_path: Path) -> None:
    with open_engine(engine, tmp_path, DIM) as store:
        store.add(range(20), unit_vectors(20, DIM), ["t"] * 20)
        ids = [40, *range(14, -1, -1)]
        with pytest.raises(DuplicateIdError) as caught:
            store.add(ids, unit_vectors(16, DIM, seed=1), ["new"] * 16)
    assert caught.value.stored
    assert caught.value.ids == tuple(range(15))
    assert str(caught.value).endswith("and 5 more; use upsert() to replace them")


def test_ids_repeated_in_one_call_are_carried_and_not_called_stored() -> None:
    with pytest.raises(DuplicateIdError) as caught:
        FaissStore(DIM).add([3, 5, 3, 5, 1], unit_vectors(5, DIM), ["t"] * 5)
    assert (caught.value.ids, caught.value.stored) == ((3, 5), False)


def test_exhausted_ids_carry_the_request_and_the_last_id_taken() -> None:
    store = FaissStore(DIM)
    store.add([2**63 - 3], unit_vectors(1, DIM), ["t"])
    with pytest.raises(IdsExhaustedError) as caught:
        store.reserve_ids(3)
    assert (caught.value.requested, caught.value.last) == (3, 2**63 - 3)


@pytest.mark.parametrize(
    ("factory", "dim"), [("Bogus", DIM), ("IDMap2,Flat", DIM), ("Flat", 0), ("Flat", True)]
)
def test_an_unusable_setting_names_itself_and_its_value(factory: str, dim: int) -> None:
    with pytest.raises(StoreSettingError) as caught:
        FaissStore(dim, factory)
    expected = ("factory", factory) if factory != "Flat" else ("dim", dim)
    assert (caught.value.setting, caught.value.value) == expected


def test_a_milvus_file_not_ending_in_db_is_a_setting_error(tmp_path: Path) -> None:
    pytest.importorskip("pymilvus")
    from baihua.index.milvus_store import MilvusStore

    with pytest.raises(StoreSettingError) as caught:
        MilvusStore(str(tmp_path / "milvus.sqlite"), DIM)
    assert caught.value.setting == "uri"


def test_a_store_opened_with_another_dim_says_recorded_and_requested(
    engine: str, tmp_path: Path
) -> None:
    open_engine(engine, tmp_path, DIM).close()
    with pytest.raises(StoreMismatchError) as caught:
        open_engine(engine, tmp_path, 2 * DIM)
    assert caught.value.recorded["dim"] == DIM
    assert caught.value.requested["dim"] == 2 * DIM


def test_a_locked_store_names_its_directory(tmp_path: Path) -> None:
    with FaissStore.open(tmp_path, DIM), pytest.raises(StoreLockedError) as caught:
        FaissStore.open(tmp_path, DIM)
    assert caught.value.path == tmp_path


@pytest.mark.parametrize(
    ("call", "argument"),
    [
        (lambda s: s.add([1], unit_vectors(1, DIM + 1), ["t"]), "vectors"),
        (lambda s: s.add([-1], unit_vectors(1, DIM), ["t"]), "ids"),
        (lambda s: s.add([1, 2], unit_vectors(2, DIM), ["t"]), "texts"),
        (lambda s: s.add([1], unit_vectors(1, DIM), ["t"], [{"x": {1}}]), "payload"),
        (lambda s: s.search(unit_vectors(1, DIM), 0), "top_k"),
        (lambda s: s.search(unit_vectors(1, DIM - 1), 1), "queries"),
        (lambda s: s.get(-3), "id"),
        (lambda s: s.iter_vectors(0).__next__(), "batch_size"),
        (lambda s: s.reserve_ids(-1), "n"),
    ],
)
def test_malformed_arguments_name_the_argument(call: object, argument: str) -> None:
    with pytest.raises(StoreInputError) as caught:
        call(FaissStore(DIM))  # type: ignore[operator]
    assert caught.value.argument == argument


def test_a_filter_error_names_the_part_of_the_filter() -> None:
    with pytest.raises(FilterError) as caught:
        parse_filter({"price": {"$gt": [1]}})
    assert caught.value.where == "filter['price']['$gt']"


def test_delete_where_of_everything_is_refused_as_a_filter_error() -> None:
    with pytest.raises(FilterError) as caught:
        FaissStore(DIM).delete_where({})
    assert caught.value.where == "filter"


def test_milvus_limits_are_input_errors_naming_the_argument(tmp_path: Path) -> None:
    with open_engine("milvus", tmp_path, DIM) as store:
        with pytest.raises(StoreInputError, match="65535 bytes") as long_text:
            store.add([1], unit_vectors(1, DIM), ["中" * 21846])
        with pytest.raises(StoreInputError, match="at most 16384") as many:
            store.search(unit_vectors(1, DIM), 16385)
        assert len(store) == 0
    assert (long_text.value.argument, many.value.argument) == ("texts", "top_k")
