"""Texts → token ids: a model folder's `tokenizer.json` run by Hugging Face `tokenizers` itself.

transformers' fast tokenizers wrap the same object; reading it directly keeps transformers (and
the torch it imports) out of a serving process. A folder with only a slow tokenizer (`vocab.txt`,
a sentencepiece model) or a hub id not yet downloaded goes through transformers once, which
converts it; the same operations run on the result. An XLM-R-style Unigram `tokenizer.json`
gets its ids from sentencepiece (`sentencepiece_ids`), and `tokenizers` is loaded only for
offsets and decoding, on first use: it would hold ~265 MB for that vocabulary.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Encoding, Tokenizer
from tokenizers.normalizers import Lowercase
from tokenizers.normalizers import Sequence as NormalizerSequence

from baihua.encoder.sentencepiece_ids import SentencePieceUnigram

TOKENIZER_FILE = "tokenizer.json"


class TextTokenizer:
    """The operations the encoder and the TEI routes need, over one `tokenizers.Tokenizer`
    (ids from `SentencePieceUnigram` where it applies), safe to share between threads.

    Attributes
    ----------
    pad_id : the id padding uses; special_ids : ids of the model's special tokens.
    """

    def __init__(
        self,
        backend: Tokenizer | Callable[[], Tokenizer],
        pad_id: int,
        *,
        unigram: SentencePieceUnigram | None = None,
    ) -> None:
        """`backend` or a function that loads it; with `unigram`, ids come from it and the
        function is called only when offsets or decoding are asked for."""
        self._backend = _untrimmed(backend) if isinstance(backend, Tokenizer) else None
        self._load = None if isinstance(backend, Tokenizer) else backend
        self._loading = threading.Lock()
        self._unigram = unigram
        self.pad_id = pad_id
        if unigram is not None:
            self.special_ids = unigram.special_ids
            self._added = len(unigram.prefix) + len(unigram.suffix)
            self._size = unigram.vocab_size
        else:
            self.special_ids = frozenset(
                token_id
                for token_id, token in self.backend.get_added_tokens_decoder().items()
                if token.special
            )
            self._added = self.backend.num_special_tokens_to_add(is_pair=False)
            self._size = self.backend.get_vocab_size(with_added_tokens=True)

    @property
    def backend(self) -> Tokenizer:
        """The `tokenizers` object, loaded on first use when ids come from sentencepiece."""
        if self._backend is None:
            with self._loading:
                if self._backend is None:
                    assert self._load is not None
                    self._backend = _untrimmed(self._load())
        return self._backend

    @property
    def backend_loaded(self) -> bool:
        return self._backend is not None

    @classmethod
    def from_pretrained(cls, source: str | Path) -> TextTokenizer:
        """From a local folder's `tokenizer.json`; anything else through transformers (a hub
        id, a slow-only folder). Raises OSError when neither can provide one."""
        folder = Path(source)
        path = folder / TOKENIZER_FILE
        if path.is_file():
            text = path.read_text(encoding="utf-8")
            spec = json.loads(text)
            if SentencePieceUnigram.supports(spec):
                unigram = SentencePieceUnigram(spec)
                pad_id = _pad_id(unigram.token_to_id, spec.get("padding"), folder)
                del spec, text
                return cls(lambda: Tokenizer.from_file(str(path)), pad_id, unigram=unigram)
            del spec
            backend = Tokenizer.from_str(text)
            return cls(backend, _pad_id(backend.token_to_id, backend.padding, folder))
        from transformers import AutoTokenizer

        converted = AutoTokenizer.from_pretrained(str(source))
        return cls(converted.backend_tokenizer, converted.pad_token_id or 0)

    def __len__(self) -> int:
        """The vocabulary size, added tokens included (the first id past the last)."""
        return int(self._size)

    def encode(self, texts: Sequence[str], max_length: int) -> tuple[list[list[int]], np.ndarray]:
        """Each text's ids with the model's special tokens, cut to `max_length` (the text loses
        its end, the special tokens stay), and each text's untruncated token count."""
        if self._unigram is not None:
            return self._unigram.encode(texts, max_length)
        encodings = self.backend.encode_batch(list(texts))
        ids = [encoding.ids for encoding in encodings]
        n_tokens = np.array([len(i) for i in ids], dtype=np.int64)
        for i in np.flatnonzero(n_tokens > max_length).tolist():
            body = self.backend.encode(texts[i], add_special_tokens=False)
            body.truncate(max(max_length - self._added, 0))
            ids[i] = self.backend.post_process(body).ids
        return ids, n_tokens

    def encode_one(self, text: str, *, add_special_tokens: bool = True) -> Encoding:
        """One text's full encoding: ids, character offsets, special-token mask; not cut."""
        return self.backend.encode(text, add_special_tokens=add_special_tokens)

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = True) -> str:
        return str(self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens))

    def id_to_token(self, token_id: int) -> str:
        return str(self.backend.id_to_token(token_id))

    def lower_case(self) -> None:
        """Lower-case texts before the tokenizer's own normaliser, as sentence-transformers does
        for a Transformer module with `do_lower_case` (ids then come from `tokenizers`)."""
        self._unigram = None
        current = self.backend.normalizer
        self.backend.normalizer = (
            Lowercase() if current is None else NormalizerSequence([Lowercase(), current])
        )


def _untrimmed(backend: Tokenizer) -> Tokenizer:
    """No padding, no truncation of its own: both are per call here, so one object serves
    every thread and every limit."""
    backend.no_padding()
    backend.no_truncation()
    return backend


def _pad_id(
    token_to_id: Callable[[str], int | None], padding: dict[str, Any] | None, folder: Path
) -> int:
    """The pad token's id as transformers finds it: the pad token `special_tokens_map.json` or
    `tokenizer_config.json` names, else `tokenizer.json`'s own padding; 0 when none is named."""
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        try:
            pad = json.loads((folder / name).read_text(encoding="utf-8")).get("pad_token")
        except (OSError, ValueError, AttributeError):
            continue
        content = pad.get("content") if isinstance(pad, dict) else pad
        found = token_to_id(content) if isinstance(content, str) else None
        if found is not None:
            return int(found)
    return int(padding["pad_id"]) if padding else 0
