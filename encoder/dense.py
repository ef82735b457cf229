"""Dense: a sentence-transformers `Dense` module (a linear layer and an activation) read from its
folder (`config.json` and `model.safetensors` or `pytorch_model.bin`) and run on pooled vectors,
in numpy (the activations as torch.nn defines them), so serving needs no torch."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.special import erf, expit

from baihua.core.errors import UsageError


def _softplus(x: np.ndarray) -> np.ndarray:
    """torch's Softplus (beta 1, threshold 20): linear above the threshold."""
    return np.where(x > 20, x, np.log1p(np.exp(np.minimum(x, 20))))


# The activations a Dense module may name: torch.nn classes without parameters of their own.
ACTIVATION_FUNCTIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "Identity": lambda x: x,
    "Tanh": np.tanh,
    "ReLU": lambda x: np.maximum(x, 0),
    "GELU": lambda x: 0.5 * x * (1 + erf(x / np.sqrt(2))),
    "Sigmoid": expit,
    "SiLU": lambda x: x * expit(x),
    "Softplus": _softplus,
    "ELU": lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0))),
    "Mish": lambda x: x * np.tanh(_softplus(x)),
}
ACTIVATIONS = tuple(ACTIVATION_FUNCTIONS)
_INPUT = "sentence_embedding"  # a Dense on token embeddings (ColBERT-style) is another model


@dataclass
class Dense:
    """``activation(x Wᵀ + b)``, plus ``x`` (or ``x Rᵀ`` when the sizes differ) with a residual.

    Parameters
    ----------
    weight : (out_features, in_features); bias : (out_features,) or None.
    activation : a name from ACTIVATIONS.
    residual : None, or True for ``x`` itself, or a (out_features, in_features) projection.
    """

    weight: np.ndarray
    bias: np.ndarray | None
    activation: str = "Identity"
    residual: np.ndarray | bool | None = None

    @property
    def in_features(self) -> int:
        return int(self.weight.shape[1])

    @property
    def out_features(self) -> int:
        return int(self.weight.shape[0])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        linear = x @ self.weight.T
        if self.bias is not None:
            linear = linear + self.bias
        out = ACTIVATION_FUNCTIONS[self.activation](linear)
        if self.residual is True:
            out = out + x
        elif isinstance(self.residual, np.ndarray):
            out = out + x @ self.residual.T
        return np.asarray(out, dtype=np.float32)


def activation_name(qualified: str, where: Path) -> str:
    """`torch.nn.modules.activation.Tanh` → `Tanh`; anything else is refused by name (loading it
    would import and run code the folder names)."""
    module, _, name = qualified.rpartition(".")
    if not module.startswith("torch.nn") or name not in ACTIVATIONS:
        raise UsageError(
            f"{where}: Dense activation {qualified!r} is not one baihua runs; it runs "
            f"torch.nn {', '.join(ACTIVATIONS)}"
        )
    return name


def _weights(folder: Path) -> dict[str, np.ndarray]:
    if (folder / "model.safetensors").is_file():
        from safetensors.numpy import load_file

        return load_file(folder / "model.safetensors")
    if (folder / "pytorch_model.bin").is_file():
        import torch  # a pickled checkpoint needs torch to read

        tensors = torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
        return {name: tensor.float().numpy() for name, tensor in tensors.items()}
    raise UsageError(f"{folder}: a Dense module without model.safetensors or pytorch_model.bin")


def load_dense(folder: Path) -> Dense:
    """The Dense module saved in `folder`, in float32 on the CPU."""
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    for key in ("module_input_name", "module_output_name"):
        if config.get(key, _INPUT) != _INPUT:
            raise UsageError(
                f"{folder}: a Dense module on {config[key]!r}; baihua runs Dense layers on the "
                f"pooled sentence embedding only"
            )
    weights = {k.removeprefix("linear."): v.astype(np.float32) for k, v in _weights(folder).items()}
    weight = weights["weight"]
    if tuple(weight.shape) != (config["out_features"], config["in_features"]):
        raise UsageError(f"{folder}: Dense weight {tuple(weight.shape)} does not match its config")
    residual: np.ndarray | bool | None = None
    if config.get("use_residual", False):
        residual = weights.get("residual.weight", True)
    return Dense(
        weight=weight,
        bias=weights.get("bias") if config.get("bias", True) else None,
        activation=activation_name(
            config.get("activation_function", "torch.nn.modules.activation.Tanh"), folder
        ),
        residual=residual,
    )
