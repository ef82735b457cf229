"""The sparse index: BM25 scores equal a brute-force BM25, updates are seen at once, and a saved
index is reloaded only when it matches the documents (rebuilt from their texts otherwise)."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from baihua.index import sparse
from baihua.index.segment import Segmenter
from baihua.index.sparse import MANIFEST, Bm25Params, SparseIndex, content_digest

TEXTS = {
    1: "型号XK-7731的说明书：如何更换滤芯",
    2: "XK-7730 型号的滤芯更换步骤",
    3: "花呗怎么还款",
    4: "借呗还款日期可以推迟吗",
    5: "花呗和借呗有什么区别",
    6: "如何更换空气净化器的滤芯",
    7: "iPhone15 电池更换多少钱",
    8: "手机电池更换要多久",
}


@pytest.fixture(scope="module")
def segment() -> Segmenter:
    return Segmenter()


@pytest.fixture
def no_merges(monkeypatch: pytest.MonkeyPatch) -> None:
    """Writes leave a delta and tombstones (a small index merges on every write otherwise)."""
    monkeypatch.setattr(sparse, "MERGE_MIN", 0)
    monkeypatch.setattr(sparse, "MERGE_SHARE", 100.0)


def filled(segment: Segmenter, path: Path | None = None) -> SparseIndex:
    index = SparseIndex(segment, path=path)
    index.upsert(list(TEXTS), list(TEXTS.values()))
    index.merge()
    return index


def brute_force_bm25(
    segment: Segmenter, texts: dict[int, str], query: str, params: Bm25Params
) -> dict[int, float]:
    """Lucene's BM25, written out: idf = ln(1 + (N - df + 0.5) / (df + 0.5)),
    tf part = tf / (tf + k1 (1 - b + b |d| / avgdl)), summed over the distinct query terms."""
    docs = {i: Counter(segment(t)) for i, t in texts.items()}
    lengths = {i: sum(c.values()) for i, c in docs.items()}
    avgdl = sum(lengths.values()) / len(docs)
    scores = {}
    for i, counts in docs.items():
        score = 0.0
        for term in set(segment(query)):
            df = sum(term in c for c in docs.values())
            tf = counts[term]
            if tf:
                idf = math.log(1 + (len(docs) - df + 0.5) / (df + 0.5))
                norm = params.k1 * (1 - params.b + params.b * lengths[i] / avgdl)
                score += idf * tf / (tf + norm)
        if score > 0:
            scores[i] = score
    return scores


@pytest.mark.parametrize("query", ["XK-7731", "7731", "滤芯更换", "花呗还款", "电池 iphone15"])
def test_scores_equal_a_brute_force_bm25(segment: Segmenter, query: str) -> None:
    index = filled(segment)
    expected = brute_force_bm25(segment, TEXTS, query, index.params)
    hits = index.search(query, top_k=len(TEXTS))
    assert {h.id for h in hits} == set(expected)
    for hit in hits:
        assert hit.score == pytest.approx(expected[hit.id], rel=1e-5)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_the_exact_code_ranks_its_document_first_and_its_number_finds_it(
    segment: Segmenter,
) -> None:
    index = filled(segment)
    assert index.search("XK-7731", top_k=3)[0].id == 1
    assert [h.id for h in index.search("7731", top_k=3)] == [1]


def test_allowed_ids_filter_before_ranking(segment: Segmenter) -> None:
    index = filled(segment)
    hits = index.search("更换", top_k=2, allowed=[6, 7, 3])
    assert {h.id for h in hits} == {6, 7}


@pytest.mark.usefixtures("no_merges")
def test_an_added_document_is_found_before_any_merge(segment: Segmenter) -> None:
    index = filled(segment)
    index.upsert([9], ["ZT-5000 说明书"])
    assert index._pending() == 1
    assert [h.id for h in index.search("zt-5000", top_k=5)] == [9]


@pytest.mark.usefixtures("no_merges")
def test_a_deleted_document_is_never_returned(segment: Segmenter) -> None:
    index = filled(segment)
    assert index.delete([1, 42]) == 1
    assert 1 not in {h.id for h in index.search("XK-7731 说明书", top_k=10)}
    index.merge()
    assert 1 not in {h.id for h in index.search("XK-7731 说明书", top_k=10)}


@pytest.mark.usefixtures("no_merges")
def test_an_upsert_replaces_the_old_words(segment: Segmenter) -> None:
    index = filled(segment)
    index.upsert([3], ["全新的 QQ 音乐会员"])
    assert 3 not in {h.id for h in index.search("花呗", top_k=10)}
    assert [h.id for h in index.search("qq", top_k=10)] == [3]
    assert len(index) == len(TEXTS)


def test_after_updates_and_a_merge_scores_are_exact_again(segment: Segmenter) -> None:
    index = filled(segment)
    index.upsert([9, 2], ["滤芯 滤芯 更换", "电池"])
    index.delete([6])
    index.merge()
    texts = {**TEXTS, 9: "滤芯 滤芯 更换", 2: "电池"}
    del texts[6]
    expected = brute_force_bm25(segment, texts, "滤芯更换", index.params)
    hits = index.search("滤芯更换", top_k=20)
    assert {h.id for h in hits} == set(expected)
    for hit in hits:
        assert hit.score == pytest.approx(expected[hit.id], rel=1e-5)


def test_a_small_index_merges_on_every_write(segment: Segmenter) -> None:
    index = filled(segment)
    index.upsert([20], ["甲"])
    assert index._pending() == 0


def test_a_large_index_merges_in_the_background_once_the_delta_is_a_share_of_it(
    segment: Segmenter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sparse, "MERGE_MIN", 3)
    monkeypatch.setattr(sparse, "MERGE_SHARE", 0.2)
    index = filled(segment)  # 8 documents: merges past 1.6 pending
    merges = index.merges
    index.upsert([20], ["甲"])
    assert index._pending() == 1 and index.merges == merges
    index.delete([1])
    assert index.wait_for_merge(timeout=30)
    assert index._pending() == 0 and index.merges == merges + 1
    assert [h.id for h in index.search("甲", 5)] == [20]


def test_an_empty_index_finds_nothing(segment: Segmenter) -> None:
    index = SparseIndex(segment)
    assert index.search("任何", top_k=5) == []
    index.upsert([1], ["，。！"])  # no tokens at all
    index.merge()
    assert index.search("任何", top_k=5) == []


# ---------------------------------------------------------------------------- persistence


def documents() -> list[tuple[int, str]]:
    return list(TEXTS.items())


def test_a_saved_index_is_loaded_without_segmenting_again(
    segment: Segmenter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    filled(segment, tmp_path).save()
    segmented: list[str] = []
    original = Segmenter.__call__

    def counted(self: Segmenter, text: str) -> list[str]:
        segmented.append(text)
        return original(self, text)

    monkeypatch.setattr(Segmenter, "__call__", counted)
    index = SparseIndex.open(tmp_path, segment, documents=documents)
    assert segmented == []
    assert index.search("XK-7731", 1)[0].id == 1 and len(index) == len(TEXTS)


def test_deleted_files_are_rebuilt_from_the_documents(segment: Segmenter, tmp_path: Path) -> None:
    filled(segment, tmp_path).save()
    for file in tmp_path.iterdir():
        file.unlink()
    index = SparseIndex.open(tmp_path, segment, documents=documents)
    assert index.search("XK-7731", 1)[0].id == 1
    assert (tmp_path / MANIFEST).exists()  # and saved again


def test_a_save_out_of_step_with_the_documents_is_rebuilt(
    segment: Segmenter, tmp_path: Path
) -> None:
    """Writes after the last save (a kill -9 before the next): the save is out of step."""
    stale = filled(segment, tmp_path)
    stale.delete([1])
    stale.save()
    index = SparseIndex.open(tmp_path, segment, documents=documents)
    assert index.search("XK-7731", 1)[0].id == 1
    changed = [(i, "另一段文字" if i == 3 else t) for i, t in TEXTS.items()]
    index = SparseIndex.open(tmp_path, segment, documents=lambda: changed)
    assert index.search("另一段文字", 1)[0].id == 3


def test_the_digest_follows_every_write(segment: Segmenter) -> None:
    index = filled(segment)
    assert index.digest == content_digest(TEXTS.items())
    index.upsert([3, 9], ["新的", "九"])
    index.delete([1])
    expected = {**TEXTS, 3: "新的", 9: "九"}
    del expected[1]
    assert index.digest == content_digest(reversed(list(expected.items())))


def test_a_damaged_data_file_is_rebuilt(segment: Segmenter, tmp_path: Path) -> None:
    filled(segment, tmp_path).save()
    data = next(tmp_path.glob("sparse-*.npz"))
    data.write_bytes(data.read_bytes()[:-10] + b"0123456789")
    index = SparseIndex.open(tmp_path, segment, documents=documents)
    assert len(index) == len(TEXTS)


def test_another_dictionary_is_detected_and_rebuilt(
    segment: Segmenter, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    filled(segment, tmp_path).save()
    dictionary = tmp_path.parent / "dict.txt"
    dictionary.write_text("滤芯更换 10 n\n", encoding="utf-8")
    other = Segmenter(dictionary)
    index = SparseIndex.open(tmp_path, other, documents=documents)
    assert "segmented differently (dictionary" in caplog.text
    assert "滤芯更换" in (index.tokens(2) or [])
    saved = json.loads((tmp_path / MANIFEST).read_text())
    assert saved["segmenter"]["dictionary"] == other.spec.dictionary


def test_another_stores_documents_are_rebuilt(segment: Segmenter, tmp_path: Path) -> None:
    filled(segment, tmp_path).save()
    index = SparseIndex.open(tmp_path, segment, documents=lambda: [(5, "只有一篇")])
    assert len(index) == 1


def test_a_save_leaves_one_data_file(segment: Segmenter, tmp_path: Path) -> None:
    index = filled(segment, tmp_path)
    index.save()
    index.upsert([9], ["新的"])
    index.save()
    assert len(list(tmp_path.glob("sparse-*.npz"))) == 1
    now = lambda: [*TEXTS.items(), (9, "新的")]  # noqa: E731
    reopened = SparseIndex.open(tmp_path, segment, documents=now)
    assert np.isclose(reopened.search("新的", 1)[0].score, index.search("新的", 1)[0].score)
