"""The ONNX Runtime backends: an exported graph (fp32, or its int8 quantisation) on the CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from baihua.encoder.backends.export import MODEL_FILE, read_meta
from baihua.encoder.pooling import HiddenStates


class OnnxBackend:
    """One InferenceSession over `folder/model.onnx`, threads set deliberately (not one per core
    per concurrent caller: oversubscription is the classic CPU serving slowdown)."""

    def __init__(self, folder: Path, name: str, num_threads: int | None = None) -> None:
        import onnxruntime as ort

        meta = read_meta(folder)
        assert meta is not None, f"{folder} is not a complete export"
        self.name = name
        self.dtype: str = meta["dtype"]
        self.variant: str = meta.get("quantization", "")
        self.dim: int = meta["dim"]
        self.has_pooler: bool = meta["has_pooler"]
        self.folder = folder
        self.calibration: dict[str, Any] | None = meta.get("calibration")
        options = ort.SessionOptions()
        options.intra_op_num_threads = num_threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(
            str(folder / MODEL_FILE), options, providers=["CPUExecutionProvider"]
        )
        self.outputs: list[str] = meta["outputs"]

    def forward(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, *, need_first: bool
    ) -> HiddenStates:
        wanted = [n for n in self.outputs if need_first or n != "first_hidden_state"]
        values: dict[str, Any] = dict(
            zip(
                wanted,
                self.session.run(
                    wanted, {"input_ids": input_ids, "attention_mask": attention_mask}
                ),
                strict=True,
            )
        )
        first = values.get("first_hidden_state")
        pooler = values.get("pooler_output")
        return HiddenStates(
            torch.from_numpy(values["last_hidden_state"]),
            None if first is None else torch.from_numpy(first),
            None if pooler is None else torch.from_numpy(pooler),
        )
