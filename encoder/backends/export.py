"""Where a model's exports live and what names them (built by `onnx_export.py` and
`openvino_export.py`; read here without torch, so a serving-only install can run them).

Layout: `<cache>/models/<model>.onnx/<key>/<backend>/{model.onnx, meta.json}`. The key hashes
the model's weights fingerprint and the versions of everything that shapes the graph (torch,
transformers, onnx, onnxruntime, this exporter), so a change of any of them builds a new export
and removes the stale one. Each `<backend>` folder is written under a temporary name and renamed
when complete: a killed export leaves only a `.partial` folder, which is never read.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

from baihua.core.files import PARTIAL_SUFFIX, write_folder_atomic
from baihua.encoder.fingerprint import model_fingerprint

EXPORT_FORMAT = 1  # bump when the graph's inputs, outputs or quantisation change
OPSET = 17
MODEL_FILE = "model.onnx"
META_FILE = "meta.json"
PARTIAL_MAX_AGE_S = 3600.0  # older partial folders are left-overs of killed exports
OUTPUTS = ("last_hidden_state", "first_hidden_state", "pooler_output")
# Names the int8 recipe; a stored int8 export with another is rebuilt. Measured on me5-small
# (STS-B test): quantising every MatMul cost 0.7 Spearman points; keeping the FFN output
# projections of the first half of the layers in float (their inputs carry activation outliers
# that per-tensor dynamic quantisation clips) brought mean cosine to fp32 from 0.9974 to 0.9990.
QUANTIZATION = "dynamic int8 MatMul, per-channel weights; FFN outputs of the first half in float"


def export_key(folder: Path, cache_dir: Path) -> dict[str, Any]:
    """Everything an export depends on; its hash names the export folder."""
    return {
        "model": model_fingerprint(str(folder), cache_dir),
        "format": EXPORT_FORMAT,
        "opset": OPSET,
        "torch": version("torch"),
        "transformers": version("transformers"),
        "onnx": version("onnx"),
        "onnxruntime": version("onnxruntime"),
    }


def key_digest(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def exports_root(cache_dir: Path, model_name: str, folder: Path) -> Path:
    """`<cache>/models/<model>.onnx`: beside a prepared preset's folder; local folders and hub
    snapshots get their folder name plus a hash of their path, so two models never share it."""
    if folder.parent == cache_dir / "models":
        return folder.parent / f"{folder.name}.onnx"
    name = Path(model_name).name if Path(model_name).is_dir() else model_name
    slug = "".join(c if c.isalnum() or c in "-_." else "-" for c in name.strip("/"))[-48:]
    path_hash = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:8]
    return cache_dir / "models" / f"{slug}-{path_hash}.onnx"


def read_meta(folder: Path) -> dict[str, Any] | None:
    """The export's metadata when `folder` holds a complete export (its metadata and the graph
    file it names, `model.onnx` unless it says otherwise), else None."""
    try:
        meta: dict[str, Any] = json.loads((folder / META_FILE).read_text())
    except (OSError, ValueError):
        return None
    return meta if (folder / meta.get("model_file", MODEL_FILE)).is_file() else None


def update_meta(folder: Path, **fields: Any) -> None:
    """Add fields to a complete export's metadata (atomically: write a sibling, then rename)."""
    meta = {**(read_meta(folder) or {}), **fields}
    tmp = folder / f".{META_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(meta, indent=2))
    os.replace(tmp, folder / META_FILE)


def build_atomically(target: Path, build: Callable[[Path], dict[str, Any]]) -> Path:
    """Run `build(tmp)` in a temporary sibling folder, write its metadata, then put it in
    place of `target` (an outdated one, or one a concurrent build finished first: the same
    content) with `write_folder_atomic`."""
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_partials(target.parent)

    def write(tmp: Path) -> None:
        meta = build(tmp)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2))

    write_folder_atomic(target, write)
    return target


def remove_partials(folder: Path) -> None:
    """Delete the left-overs of killed exports (old enough that no live export owns them)."""
    now = time.time()
    for path in folder.glob(f".*{PARTIAL_SUFFIX}"):
        if now - path.stat().st_mtime > PARTIAL_MAX_AGE_S:
            shutil.rmtree(path, ignore_errors=True)


def remove_stale(root: Path, keep: str) -> None:
    """Remove the exports of this model under other keys (older model files or versions)."""
    for path in root.iterdir() if root.is_dir() else ():
        if path.is_dir() and path.name != keep and not path.name.startswith("."):
            shutil.rmtree(path, ignore_errors=True)
