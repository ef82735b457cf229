"""The ONNX Runtime backends: an exported graph (fp32, or its int8 quantisation) on the CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from baihua.encoder.backends.base import default_threads
from baihua.encoder.backends.export import MODEL_FILE, read_meta
from baihua.encoder.pooling import HiddenStates

# How onnx-int8 runs: a stored calibration or auto choice measured another way is measured again.
INT8_RUN = "int8: one text per run, unpadded"


class OnnxBackend:
    """One InferenceSession over `folder/model.onnx`, threads set deliberately (not one per core
    per concurrent caller: oversubscription is the classic CPU serving slowdown)."""

    parallel_requests = 1

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
        options.intra_op_num_threads = num_threads or default_threads()
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
        if self.dtype == "int8":
            values = self._run_each_text(input_ids, attention_mask, wanted)
        else:
            values = self._run(input_ids, attention_mask, wanted)
        first = values.get("first_hidden_state")
        pooler = values.get("pooler_output")
        return HiddenStates(values["last_hidden_state"], first, pooler)

    def _run(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, wanted: list[str]
    ) -> dict[str, np.ndarray]:
        feed = {"input_ids": input_ids, "attention_mask": attention_mask}
        return dict(zip(wanted, self.session.run(wanted, feed), strict=True))

    def _run_each_text(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, wanted: list[str]
    ) -> dict[str, np.ndarray]:
        """Each text alone and unpadded, the outputs padded back with zeros. Dynamic int8 takes
        one activation scale per tensor at run time: in a batch, a text's vector would depend on
        the texts and the padding it shares the batch with (min cosine 0.997 between batch 32
        and batch 1 on me5-small); alone it depends on the text only."""
        batch, width = input_ids.shape
        out: dict[str, np.ndarray] = {}
        for row, length in enumerate(attention_mask.sum(axis=1).tolist()):
            own = slice(row, row + 1), slice(0, max(int(length), 1))
            for name, value in self._run(input_ids[own], attention_mask[own], wanted).items():
                per_token = value.ndim == 3  # (1, length, hidden); the pooler's is (1, hidden)
                if name not in out:
                    shape = (
                        (batch, width, *value.shape[2:]) if per_token else (batch, *value.shape[1:])
                    )
                    out[name] = np.zeros(shape, dtype=np.float32)
                if per_token:
                    out[name][row, : value.shape[1]] = value[0]
                else:
                    out[name][row] = value[0]
        return out
