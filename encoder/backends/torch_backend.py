"""The torch backend: the transformers model in eager mode, fp32 or under bf16 autocast."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch
from transformers import AutoModel, PreTrainedModel
from transformers.utils import logging as hf_logging

from baihua.core.errors import UsageError
from baihua.encoder.backends.base import ModelLoadError
from baihua.encoder.pooling import HiddenStates


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(previous)


def load_transformer(path: str, name: str) -> PreTrainedModel:
    """The model in eval mode, its pooler removed when the checkpoint has none."""
    try:
        # Quiet: the load report calls a missing pooler "newly initialized"; we drop it below.
        with _quiet_transformers():
            model, loading_info = AutoModel.from_pretrained(path, output_loading_info=True)
    except OSError as err:
        raise ModelLoadError(
            f"cannot load model {name!r} from {path!r}: it is not a preset, not a "
            f"local folder, and the hub could not provide it ({err.__class__.__name__})"
        ) from err
    if any(key.startswith("pooler.") for key in loading_info["missing_keys"]):
        model.pooler = None  # a randomly initialised pooler must never produce vectors
    return model.eval()


class TorchBackend:
    """transformers in eager mode; `bfloat16` runs it under autocast (vectors come back fp32)."""

    name = "torch"
    variant = ""
    parallel_requests = 1

    def __init__(self, model: PreTrainedModel, device: str, dtype: str) -> None:
        if dtype not in ("float32", "bfloat16"):
            raise UsageError(f"the torch backend runs float32 or bfloat16, not {dtype!r}")
        self.device = torch.device(device)
        self.model: PreTrainedModel = model.to(self.device)  # type: ignore[arg-type]
        self.dtype = dtype
        self.dim: int = model.config.hidden_size
        self.has_pooler = getattr(model, "pooler", None) is not None

    @torch.inference_mode()
    def forward(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, *, need_first: bool
    ) -> HiddenStates:
        ids = torch.from_numpy(input_ids).to(self.device)
        mask = torch.from_numpy(attention_mask).to(self.device)
        with self._autocast():
            output = self.model(input_ids=ids, attention_mask=mask, output_hidden_states=need_first)
        first = output.hidden_states[1] if need_first else None
        pooler = getattr(output, "pooler_output", None)
        return HiddenStates(
            _array(output.last_hidden_state),
            None if first is None else _array(first),
            None if pooler is None else _array(pooler),
        )

    def _autocast(self) -> contextlib.AbstractContextManager[None]:
        if self.dtype == "bfloat16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()


def _array(states: torch.Tensor) -> np.ndarray:
    """float32 on the CPU, where every pooling runs."""
    return states.float().cpu().numpy()
