"""Shared fixtures: a tiny random-weight BERT built in code, paths to the shared data, and a
Milvus server on a loopback port."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from baihua.encoder import EmbeddingPipeline, Encoder, ModelSpec
from baihua.whitening import Whitening
from tests.milvus_server import running_milvus_server

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Settings-built encoders (CLI, service) run the fp32 reference backend in tests about other
# things; tests/encoder/test_backends.py and the tests that pass a backend cover the rest.
os.environ.setdefault("BAIHUA_BACKEND", "torch")

# The evaluation data (senteval_cn/, stsb_en/): BAIHUA_TEST_DATA, else the team's folder beside
# the checkout; the tests that need it skip without it.
SHARED_DATA = Path(
    os.environ.get("BAIHUA_TEST_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)


def build_tiny_bert(folder: Path, *, with_pooler: bool = True, seed: int = 0) -> Path:
    """A 2-layer, 32-wide random BERT with a WordPiece tokenizer, saved like a hub checkpoint;
    another `seed` gives other weights of the same shapes."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    pieces = list("abcdefghijklmnopqrstuvwxyz0123456789") + list("的一是不了人我在有他这中大来上")
    pieces += ["##" + p for p in "abcdefghijklmnopqrstuvwxyz"] + ["hello", "world", "bert"]
    vocab = {token: i for i, token in enumerate(specials + pieces)}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=128,
    )
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertModel(config, add_pooling_layer=with_pooler).eval().save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared evaluation data not found at {SHARED_DATA}")
    return SHARED_DATA


MAX_LENGTH = 16
WHITENED_DIM = 14  # all the dimensions the tiny BERT's vectors of FIT_TEXTS span
FIT_TEXTS = [f"hello world {i} {'bert ' * (i % 5)} 的一是{i}" for i in range(64)]


@pytest.fixture(scope="session")
def pipeline(tiny_bert: Path) -> EmbeddingPipeline:
    """The tiny BERT (32 dims) with e5-style prefixes, so queries and passages differ, and a
    14-dim whitening fitted on its own vectors."""
    spec = ModelSpec("tiny-e5", str(tiny_bert), query_prefix="query: ", passage_prefix="passage: ")
    encoder = Encoder(spec, pooling="last-avg", max_length=MAX_LENGTH, device="cpu")
    whitening = Whitening(n_components=WHITENED_DIM).fit(encoder.encode(FIT_TEXTS))
    return EmbeddingPipeline(encoder, whitening)


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Milvus's native engine as a gRPC server on a loopback port for the session (see
    tests/milvus_server.py); its address, also in the environment for subprocesses."""
    with running_milvus_server(tmp_path_factory.mktemp("milvus-server")) as uri:
        yield uri
