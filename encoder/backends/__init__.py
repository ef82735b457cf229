"""Execution backends behind the Encoder: torch (fp32, bf16 autocast), ONNX Runtime fp32 and
int8, and `auto`, the fastest of them that keeps fp32 quality."""

from baihua.encoder.backends.base import BACKEND_CHOICES, BACKENDS, Backend, ModelLoadError
from baihua.encoder.backends.openvino_export import Int8Recipe
from baihua.encoder.backends.prepare import Backends, check_backend

__all__ = [
    "BACKENDS",
    "BACKEND_CHOICES",
    "Backend",
    "Backends",
    "Int8Recipe",
    "ModelLoadError",
    "check_backend",
]
