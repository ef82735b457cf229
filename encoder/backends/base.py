"""The small protocol every execution backend implements: padded token ids in, the hidden states
every pooling needs out."""

from __future__ import annotations

import os
from typing import Protocol

import numpy as np

from baihua.core.errors import BaihuaError
from baihua.encoder.pooling import HiddenStates

BACKENDS: tuple[str, ...] = ("torch", "onnx", "onnx-int8", "openvino", "openvino-int8")
BACKEND_CHOICES: tuple[str, ...] = ("auto", *BACKENDS)


class ModelLoadError(BaihuaError, RuntimeError):
    """The model could not be loaded; the message says from where and what to try."""


def default_threads() -> int:
    """Intra-op threads when none are named: the CPUs this process may run on."""
    return len(os.sched_getaffinity(0))


class Backend(Protocol):
    name: str  # one of BACKENDS, never "auto"
    dtype: str  # "float32", "bfloat16" or "int8" (what the matmuls run in)
    variant: str  # what else decides the vectors (the int8 recipe); "" for none
    dim: int
    has_pooler: bool
    parallel_requests: int  # calls that may run at once to keep it busy (OpenVINO streams)

    def forward(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, *, need_first: bool
    ) -> HiddenStates:
        """States (float32) for one right-padded (batch, width) int64 batch; `first` only when
        `need_first`."""
        ...
