"""The sparse index's words: jieba for Chinese, codes whole and in parts, NFKC and lower case."""

from __future__ import annotations

from pathlib import Path

import pytest

from baihua.index.segment import RULE, Segmenter, code_tokens


@pytest.fixture(scope="module")
def segment() -> Segmenter:
    return Segmenter()


def test_a_code_is_kept_whole_and_in_its_parts(segment: Segmenter) -> None:
    assert segment("XK-7731") == ["xk-7731", "xk", "7731"]


def test_a_code_inside_chinese_is_cut_out_of_it(segment: Segmenter) -> None:
    tokens = ["型号", "xk-7731", "xk", "7731", "的", "说明", "说明书"]
    assert segment("型号XK-7731的说明书") == tokens


def test_full_width_and_upper_case_become_the_same_code(segment: Segmenter) -> None:
    assert segment("ＸＫ－７７３１") == segment("xk-7731")


def test_letters_and_digits_run_together_are_split_too() -> None:
    assert code_tokens("iphone15") == ["iphone15", "iphone", "15"]
    assert code_tokens("3.14") == ["3.14", "3", "14"]


def test_a_plain_word_or_number_is_one_token() -> None:
    assert code_tokens("hello") == ["hello"]
    assert code_tokens("7731") == ["7731"]


def test_chinese_runs_are_cut_in_search_mode(segment: Segmenter) -> None:
    tokens = segment("中华人民共和国")
    assert "中华人民共和国" in tokens and "共和国" in tokens and "人民" in tokens


def test_punctuation_and_spaces_are_dropped_and_stop_words_kept(segment: Segmenter) -> None:
    assert segment("  你好，世界！ 的 ") == ["你好", "世界", "的"]


def test_query_terms_are_distinct(segment: Segmenter) -> None:
    assert segment.query_terms("xk xk XK 型号") == ["xk", "型号"]


def test_the_spec_names_rule_segmenter_and_dictionary(segment: Segmenter) -> None:
    spec = segment.spec
    assert spec.rule == RULE and spec.segmenter == "jieba"
    assert len(spec.dictionary) == 64 and spec.segmenter_version


def test_another_dictionary_is_another_spec(segment: Segmenter, tmp_path: Path) -> None:
    dictionary = tmp_path / "dict.txt"
    dictionary.write_text("型号 10 n\n说明书 10 n\n", encoding="utf-8")
    other = Segmenter(dictionary)
    assert set(segment.spec.differences(other.spec.to_dict())) == {"dictionary"}
    assert "型号" in other("型号说明书")
