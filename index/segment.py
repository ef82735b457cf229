"""Words for the sparse (BM25) index: Chinese segmented by jieba, codes kept whole and in parts.

The rule (``RULE``; any change to it is a new ``rule`` in ``SegmenterSpec``):

1. NFKC, then lower case: full-width ``ＸＫ－７７３１`` is ``xk-7731``, ``XK`` matches ``xk``.
2. Runs of Han characters go to jieba's search mode (``lcut_for_search``), which emits each word
   and the dictionary words inside it: ``中华人民共和国`` gives ``中华 华人 人民 共和 共和国
   中华人民共和国``, so a query for ``共和国`` finds it. Queries go through the same mode.
3. Runs of other letters and digits joined by ``- _ . / : + #`` form a code. A code is emitted
   whole and, when it has separators or letter/digit boundaries, also as its letter runs and
   digit runs: ``XK-7731`` gives ``xk-7731 xk 7731``, ``iPhone15`` gives ``iphone15 iphone 15``.
   So ``7731`` finds ``XK-7731``, and ``XK-7731`` ranks the document naming it first (the whole
   code is a rarer term than its parts).
4. Everything else (spaces, punctuation, symbols) separates tokens and is dropped.

No stop words are removed: BM25's idf already gives ``的``, ``了``, ``是`` almost no weight, and a
list would also remove terms that matter inside names and codes (``a`` in ``A-10``).

jieba, its version and the SHA-256 of its dictionary are recorded in ``SegmenterSpec``: another
dictionary cuts words differently, so an index built with one cannot be searched with the other.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import re
import threading
import unicodedata
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RULE = "jieba-search+codes/1"

_HAN = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f"
_LETTER_OR_DIGIT = rf"[^\W_{_HAN}]"
_CODE = rf"{_LETTER_OR_DIGIT}+(?:[-_./:+#]{_LETTER_OR_DIGIT}+)*"
_RUN = re.compile(rf"(?P<han>[{_HAN}]+)|(?P<code>{_CODE})")
_PART = re.compile(r"[^\W\d_]+|\d+")


@dataclass(frozen=True)
class SegmenterSpec:
    """What fixes the words of a text: the rule, the segmenter's version and its dictionary.

    Recorded with a sparse index and compared on open, like ``EmbeddingSpec`` for vectors.
    """

    rule: str
    segmenter: str
    segmenter_version: str
    dictionary: str  # SHA-256 of the dictionary file

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def differences(self, recorded: object) -> dict[str, tuple[Any, Any]]:
        """Field -> (recorded, this) for each field that differs; every field when ``recorded``
        is not a mapping of them."""
        old = recorded if isinstance(recorded, dict) else {}
        return {
            name: (old.get(name), value)
            for name, value in self.to_dict().items()
            if old.get(name) != value
        }


class Segmenter:
    """Text -> tokens by the rule above; thread-safe, and cheap to call once loaded.

    Parameters
    ----------
    dictionary : path of a jieba dictionary file; None uses jieba's own ``dict.txt``.
    """

    def __init__(self, dictionary: Path | None = None) -> None:
        with warnings.catch_warnings():  # jieba 0.42 imports the deprecated pkg_resources
            warnings.simplefilter("ignore")
            import jieba

        jieba.setLogLevel(logging.WARNING)
        path = Path(dictionary) if dictionary is not None else _default_dictionary(jieba)
        self._jieba = jieba.Tokenizer(str(path))
        self._loaded = False
        self._load_lock = threading.Lock()
        self.spec = SegmenterSpec(
            rule=RULE,
            segmenter="jieba",
            segmenter_version=str(jieba.__version__),
            dictionary=_sha256(path),
        )

    def __call__(self, text: str) -> list[str]:
        """The tokens of ``text`` in order, repeats kept (term frequency counts them)."""
        self._load()
        tokens: list[str] = []
        for match in _RUN.finditer(unicodedata.normalize("NFKC", text).lower()):
            if match.group("han") is not None:
                tokens += self._jieba.lcut_for_search(match.group("han"))
            else:
                tokens += code_tokens(match.group("code"))
        return tokens

    def words(self, text: str) -> list[str]:
        """The dictionary words jieba's precise mode cuts from the Han runs of ``text`` (no
        search-mode sub-words, no HMM guesses): what a user would type as one term."""
        self._load()
        normalised = unicodedata.normalize("NFKC", text).lower()
        return [
            word
            for match in _RUN.finditer(normalised)
            if match.group("han") is not None
            for word in self._jieba.lcut(match.group("han"), HMM=False)
        ]

    def query_terms(self, text: str) -> list[str]:
        """The distinct tokens of a query, in first-seen order: a query is a set of terms."""
        return list(dict.fromkeys(self(text)))

    def _load(self) -> None:
        # jieba loads its dictionary lazily (1-4 s); do it once, not in every thread at once
        if not self._loaded:
            with self._load_lock:
                if not self._loaded:
                    self._jieba.initialize()
                    self._loaded = True


def code_tokens(code: str) -> list[str]:
    """A lower-cased code and, if it has more than one, its letter runs and digit runs."""
    parts = _PART.findall(code)
    return [code] if len(parts) <= 1 else [code, *parts]


def _default_dictionary(jieba: Any) -> Path:
    return Path(jieba.__file__).parent / jieba.DEFAULT_DICT_NAME


def _sha256(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as error:
        raise ValueError(f"cannot read the jieba dictionary {path}: {error}") from None
