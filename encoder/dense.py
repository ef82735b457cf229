"""Dense: a sentence-transformers `Dense` module (a linear layer and an activation) read from its
folder (`config.json` and `model.safetensors` or `pytorch_model.bin`) and run on pooled vectors."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from baihua.core.errors import UsageError

# The activations a Dense module may name: torch.nn classes without parameters of their own.
ACTIVATIONS = ("Identity", "Tanh", "ReLU", "GELU", "Sigmoid", "SiLU", "Softplus", "ELU", "Mish")
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

    weight: torch.Tensor
    bias: torch.Tensor | None
    activation: str = "Identity"
    residual: torch.Tensor | bool | None = None

    @property
    def in_features(self) -> int:
        return int(self.weight.shape[1])

    @property
    def out_features(self) -> int:
        return int(self.weight.shape[0])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = getattr(torch.nn, self.activation)()(
            torch.nn.functional.linear(x, self.weight, self.bias)
        )
        if self.residual is True:
            out = out + x
        elif isinstance(self.residual, torch.Tensor):
            out = out + torch.nn.functional.linear(x, self.residual)
        return out


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


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    if (folder / "model.safetensors").is_file():
        from safetensors.torch import load_file

        return load_file(folder / "model.safetensors")
    if (folder / "pytorch_model.bin").is_file():
        return torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
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
    weights = {k.removeprefix("linear."): v.float() for k, v in _weights(folder).items()}
    weight = weights["weight"]
    if tuple(weight.shape) != (config["out_features"], config["in_features"]):
        raise UsageError(f"{folder}: Dense weight {tuple(weight.shape)} does not match its config")
    residual: torch.Tensor | bool | None = None
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
