"""Token ids of an XLM-R-style `tokenizer.json` computed by sentencepiece instead of `tokenizers`.

`tokenizers` holds a Unigram vocabulary as a trie of hash maps, one per byte of every piece: for
XLM-R's 250,002 pieces (me5-small, multilingual-e5, bge-m3) that is ~265 MB of a serving
process, more than the int8 model itself. sentencepiece, whose models these vocabularies came
from, runs the same Viterbi over a double-array trie in ~55 MB and releases the GIL.
The pipeline it reproduces is the one Hugging Face's converter writes for sentencepiece models
(precompiled charsmap, runs of spaces collapsed, a metaspace before every word, special tokens
matched in the raw text); a `tokenizer.json` with anything else gets `None` and stays on
`tokenizers`. Two known differences, both tested: where two segmentations score the same,
float32 (sentencepiece) and float64 (`tokenizers`) sums may break the tie differently (1 text in
173,825 of the STS data: a run of '*'); and a character whose NFKC form is a space and a mark
('¨') followed by a zero-width joiner normalises differently (`tokenizers` maps the grapheme
cluster whole).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2

METASPACE = "▁"
COLLAPSE_SPACES = {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "}


class SentencePieceUnigram:
    """`encode` of a Unigram `tokenizer.json` on sentencepiece: the ids `tokenizers` gives, with
    the post-processor's special tokens around them.

    Attributes
    ----------
    special_ids : ids of the added tokens marked special; vocab_size : one past the last id;
    prefix, suffix : the post-processor's ids before and after a text's own.
    """

    def __init__(self, spec: dict[str, Any]) -> None:
        """`spec` is a parsed `tokenizer.json` that `supports` accepts."""
        model = spec["model"]
        added = spec["added_tokens"]
        added_ids = {token["id"] for token in added}
        proto = sentencepiece_model_pb2.ModelProto()  # type: ignore[attr-defined]  # no stubs
        proto.trainer_spec.model_type = sentencepiece_model_pb2.TrainerSpec.UNIGRAM  # type: ignore[attr-defined]
        proto.trainer_spec.unk_id = model["unk_id"]
        piece_type = sentencepiece_model_pb2.ModelProto.SentencePiece  # type: ignore[attr-defined]
        for i, (text, score) in enumerate(model["vocab"]):
            piece = proto.pieces.add()
            piece.piece, piece.score = text, score
            if i == model["unk_id"]:
                piece.type = piece_type.UNKNOWN
            elif i in added_ids:
                piece.type = piece_type.CONTROL  # matched in the raw text, never by the model
        normalizer = proto.normalizer_spec
        normalizer.precompiled_charsmap = base64.b64decode(
            spec["normalizer"]["normalizers"][0]["precompiled_charsmap"]
        )
        normalizer.add_dummy_prefix = True
        normalizer.escape_whitespaces = True
        normalizer.remove_extra_whitespaces = True
        self._model = spm.SentencePieceProcessor(model_proto=proto.SerializeToString())
        # the same map without stripping, to see whether a text ends in a space after it
        self._keeps_ends = spm.SentencePieceNormalizer(
            normalizer_spec=normalizer.SerializeToString(), remove_extra_whitespaces=False
        )
        self._space_id = int(self._model.piece_to_id(METASPACE))
        self._added_pattern = _added_tokens_pattern(added)
        self._added_ids = {token["content"]: int(token["id"]) for token in added}
        self._matched_ids = [0] + [int(token["id"]) for token in added_token_order(added)]
        self.special_ids = frozenset(int(t["id"]) for t in added if t.get("special"))
        self.vocab_size = max([len(model["vocab"]), *(i + 1 for i in added_ids)])
        template = _template_ids(spec["post_processor"])
        assert template is not None, "a post-processor `supports` refuses"
        self.prefix, self.suffix = template

    @staticmethod
    def supports(spec: dict[str, Any]) -> bool:
        """Whether `spec` (a parsed `tokenizer.json`) is the pipeline this class reproduces."""
        model, normalizer = spec.get("model") or {}, spec.get("normalizer") or {}
        steps = normalizer.get("normalizers") or []
        pre = spec.get("pre_tokenizer") or {}
        return bool(
            model.get("type") == "Unigram"
            and not model.get("byte_fallback")
            and model.get("unk_id") is not None
            and normalizer.get("type") == "Sequence"
            and [step.get("type") for step in steps] == ["Precompiled", "Replace"]
            and steps[1] == COLLAPSE_SPACES
            and pre.get("type") == "Metaspace"
            and pre.get("replacement") == METASPACE
            and pre.get("split", True)
            and pre.get("prepend_scheme", "always" if pre.get("add_prefix_space") else None)
            == "always"
            and all(
                not token.get("normalized") and not token.get("single_word")
                for token in spec.get("added_tokens", [])
            )
            # a piece with a metaspace inside would span the words tokenizers splits first
            and not any(METASPACE in piece[1:] for piece, _ in model["vocab"])
            and _template_ids(spec.get("post_processor")) is not None
        )

    def token_to_id(self, token: str) -> int | None:
        if token in self._added_ids:
            return self._added_ids[token]
        found = int(self._model.piece_to_id(token))
        return found if self._model.id_to_piece(found) == token else None

    def encode(self, texts: Sequence[str], max_length: int) -> tuple[list[list[int]], np.ndarray]:
        """Each text's ids with the special tokens around, its own cut to fit `max_length`,
        and each text's uncut count."""
        bodies = self._model.encode(list(texts), num_threads=1)
        ids, n_tokens = [], []
        room = max(max_length - len(self.prefix) - len(self.suffix), 0)
        for text, body in zip(texts, bodies, strict=True):
            if self._added_pattern is not None and self._added_pattern.search(text):
                body = self._around_added_tokens(text)
            elif self._ends_in_space(text):
                body.append(self._space_id)
            n_tokens.append(len(body) + len(self.prefix) + len(self.suffix))
            ids.append(self.prefix + body[:room] + self.suffix)
        return ids, np.array(n_tokens, dtype=np.int64)

    def _ends_in_space(self, text: str) -> bool:
        """`tokenizers` keeps a text's final space as a metaspace token; sentencepiece strips it.
        A text ending in a letter or digit cannot end in a space once normalised."""
        return (
            bool(text)
            and not text[-1].isalnum()
            and self._keeps_ends.normalize(text).endswith(METASPACE)
        )

    def _around_added_tokens(self, text: str) -> list[int]:
        """The pieces between added tokens, each encoded as a text of its own, and the added
        tokens' ids between them (as `tokenizers` splits the raw text first)."""
        assert self._added_pattern is not None
        ids: list[int] = []
        start = 0
        for match in self._added_pattern.finditer(text):
            ids += self._segment(text[start : match.start()])
            ids.append(self._matched_ids[match.lastindex or 0])
            start = match.end()
        return ids + self._segment(text[start:])

    def _segment(self, text: str) -> list[int]:
        ids: list[int] = self._model.encode(text)
        return ids + [self._space_id] if self._ends_in_space(text) else ids


def _added_tokens_pattern(added: list[dict[str, Any]]) -> re.Pattern[str] | None:
    """One regex over the added tokens, longest first, each with the whitespace it strips;
    group i holds the i-th token of `added_token_order`."""
    if not added:
        return None
    return re.compile(
        "|".join(
            ("\\s*" if token["lstrip"] else "")
            + f"({re.escape(token['content'])})"
            + ("\\s*" if token["rstrip"] else "")
            for token in added_token_order(added)
        )
    )


def added_token_order(added: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(added, key=lambda token: -len(token["content"]))


def _template_ids(processor: dict[str, Any] | None) -> tuple[list[int], list[int]] | None:
    """The special ids a post-processor puts before and after a single text, or None when it
    does anything else."""
    if processor is None:
        return [], []
    if processor.get("type") in ("RobertaProcessing", "BertProcessing"):
        return [int(processor["cls"][1])], [int(processor["sep"][1])]
    if processor.get("type") != "TemplateProcessing":
        return None
    specials = processor.get("special_tokens", {})
    kinds = [next(iter(step)) for step in processor["single"]]
    if kinds.count("Sequence") != 1 or set(kinds) - {"Sequence", "SpecialToken"}:
        return None
    split = kinds.index("Sequence")
    steps = processor["single"]

    def special_id(step: dict[str, Any]) -> int:
        return int(specials[step["SpecialToken"]["id"]]["ids"][0])

    return [special_id(step) for step in steps[:split]], [
        special_id(step) for step in steps[split + 1 :]
    ]
