"""The fixed calibration set and the two measurements `auto` needs: agreement with fp32 torch
(min and mean cosine over every pooling) and throughput on this machine."""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from baihua.encoder.backends.base import Backend
from baihua.encoder.batching import length_sorted_batches, pad
from baihua.encoder.pooling import masked_mean
from baihua.encoder.tokenizer import TextTokenizer

CALIBRATION_SET = 1  # bump when the texts, the length limit or the measure change
MIN_COSINE = 0.99  # auto's bar: every calibration vector this close to fp32 torch
CALIBRATION_MAX_LENGTH = 128
CALIBRATION_BATCH = 32
OUT_OF_RACE = 0.5  # a first timed pass under this share of the fastest ends a backend's timing

_SUBJECTS = ["我", "他们", "老师", "这家公司", "小明", "我的朋友", "银行客服", "很多网友"]
_VERBS = ["喜欢", "不想", "正在", "昨天开始", "为什么要", "可以帮我", "打算", "已经"]
_OBJECTS = [
    "吃火锅",
    "办理信用卡",
    "学习中文",
    "提前还款",
    "看一部新电影",
    "去北京出差",
    "修改登录密码",
    "买一部手机",
]
_ENGLISH = [
    "How do I reset my password?",
    "The weather is lovely today, let's go for a walk.",
    "A man is playing a guitar on the street.",
    "Can I repay my loan early without a fee?",
]


def calibration_texts() -> list[str]:
    """128 fixed texts: 96 short Chinese sentences, 28 longer ones joined from them (up to
    ~100 tokens) and 4 English ones. Fixed, so a stored result stays comparable."""
    short = [s + v + o for s, v, o in itertools.product(_SUBJECTS, _VERBS, _OBJECTS)]
    rng = np.random.default_rng(0)
    picked = [short[i] for i in rng.choice(len(short), 96, replace=False)]
    long = ["，".join(rng.choice(short, 2 + i % 12)) + "。" for i in range(28)]
    return picked + long + _ENGLISH


def tokenized_batches(
    tokenizer: TextTokenizer, prefix: str = ""
) -> list[tuple[np.ndarray, np.ndarray]]:
    """The calibration set as padded, length-sorted batches, each text with the model's query
    prefix: checked as it is used (e5 without its prefix is off its training distribution, and
    int8 errors there are twice as large)."""
    texts = [prefix + text for text in calibration_texts()]
    ids, _ = tokenizer.encode(texts, CALIBRATION_MAX_LENGTH)
    return [
        pad([ids[i] for i in batch], tokenizer.pad_id)
        for batch in length_sorted_batches([len(i) for i in ids], CALIBRATION_BATCH)
    ]


def pooled(backend: Backend, batches: Sequence[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Every pooling's vectors side by side, so one cosine bound covers them all."""
    parts = []
    for input_ids, attention_mask in batches:
        states = backend.forward(input_ids, attention_mask, need_first=True)
        assert states.first is not None
        vectors = [
            states.last[:, 0],
            masked_mean(states.last, attention_mask),
            masked_mean((states.first + states.last) / 2, attention_mask),
        ]
        if states.pooler is not None:
            vectors.append(states.pooler)
        parts.append(np.stack(vectors, axis=1))
    return np.concatenate(parts).astype(np.float64)


@dataclass
class Agreement:
    min_cosine: float
    mean_cosine: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def agreement(
    backend: Backend, reference: np.ndarray, batches: Sequence[tuple[np.ndarray, np.ndarray]]
) -> Agreement:
    """Cosine between the backend's vectors and the reference's (`pooled` over the same
    batches, computed once for every backend checked), over texts × poolings."""
    ours, theirs = pooled(backend, batches), reference
    norms = np.linalg.norm(ours, axis=-1) * np.linalg.norm(theirs, axis=-1)
    cos = (ours * theirs).sum(axis=-1) / np.maximum(norms, 1e-8)
    return Agreement(float(cos.min()), float(cos.mean()))


def throughputs(
    backends: Sequence[Backend],
    batches: Sequence[tuple[np.ndarray, np.ndarray]],
    contenders: Sequence[bool],
    repeats: int = 5,
) -> list[tuple[float, int]]:
    """Sentences per second of each backend over the calibration batches, and the passes it
    was timed: the median of `repeats` passes after a warm-up, the backends taking turns within
    each repeat so that a change of load on a shared machine hits them all alike.

    Only the `contenders` (those auto may choose) are timed in full: a backend that cannot be
    chosen, or whose first timed pass ran under `OUT_OF_RACE` of the fastest contender's, is
    timed that once (no noise turns a speed under half into a tie), which cuts ~15 s of a first
    start's measuring of six backends."""
    n = sum(len(ids) for ids, _ in batches)
    times: list[list[float]] = [[] for _ in backends]
    timed = list(range(len(backends)))
    for repeat in range(repeats + 1):
        for i in timed:
            start = time.perf_counter()
            for input_ids, attention_mask in batches:
                backends[i].forward(input_ids, attention_mask, need_first=False)
            times[i].append(time.perf_counter() - start)
        if repeat == 1:
            fastest = min(times[i][1] for i in timed if contenders[i])
            timed = [i for i in timed if contenders[i] and fastest / times[i][1] >= OUT_OF_RACE]
    return [(n / statistics.median(own[1:]), len(own) - 1) for own in times]
