"""A serving copy of a prepared model: what one backend needs to serve it, and nothing else.

`baihua models prepare NAME --backend B --serving-only` turns a model prepared in the cache into
one (a container image carries it). The model's folder keeps its config and tokenizer files and
gains `serving-copy.json`, naming the fingerprint its weights had (vectors stored before still
match), the export that runs it and the backend chosen; its weights, the fp32 ONNX graph and the
other backends' exports are removed. Such a copy serves without torch, transformers or nncf:
that backend, and `auto`, which resolves to it. Any other backend needs the model again (remove
the folder and prepare it anew).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from baihua.core.errors import UsageError
from baihua.core.files import write_atomic

if TYPE_CHECKING:
    from baihua.encoder.encoder import Encoder

SERVING_COPY_FILE = "serving-copy.json"
# What `from_pretrained` reads the transformer's weights from: a serving copy needs none of them.
WEIGHT_FILES = (
    "*.safetensors",
    "*.safetensors.index.json",
    "pytorch_model*.bin",
    "pytorch_model.bin.index.json",
)


@dataclass(frozen=True)
class ServingCopy:
    """What `serving-copy.json` records.

    Attributes
    ----------
    fingerprint : the model's weights fingerprint, taken before they were removed.
    export : the export key folder (under the model's exports root) that holds `backend`.
    backend, dtype : what serves; chosen_by : how it was chosen (the start-up line says it).
    """

    fingerprint: str
    export: str
    backend: str
    dtype: str
    chosen_by: str


def read_serving_copy(folder: Path | None) -> ServingCopy | None:
    """The record of a serving copy in `folder`, or None when it is a full model."""
    if folder is None:
        return None
    try:
        return ServingCopy(**json.loads((folder / SERVING_COPY_FILE).read_text(encoding="utf-8")))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as err:
        raise UsageError(
            f"{folder / SERVING_COPY_FILE} is unreadable ({err}); remove {folder} and prepare "
            "the model again"
        ) from err


def make_serving_copy(encoder: Encoder, cache_dir: Path) -> tuple[ServingCopy, int]:
    """Keep only what `encoder`'s backend serves with; returns the record and the bytes freed.

    The record is written first, so a crash part-way leaves a copy that serves and has files to
    spare, never a folder without its fingerprint. Only a model prepared in `cache_dir` is cut
    down: a folder of the user's own is never emptied."""
    folder = encoder.folder
    export = getattr(encoder.runner, "folder", None)
    if export is None:
        raise UsageError(
            f"backend {encoder.backend} serves from the model's weights; a serving copy keeps an "
            "export instead: choose onnx, onnx-int8, openvino, openvino-int8 or auto"
        )
    if folder is None or folder.parent != (cache_dir / "models").resolve():
        raise UsageError(
            f"--serving-only removes a model's weights, so it is for models prepared in the "
            f"cache ({cache_dir / 'models'}), not {folder}"
        )
    from baihua.encoder.backends.prepare import machine_description

    how = getattr(encoder.runner, "chosen_by", f"backend {encoder.backend}, named")
    machine = machine_description(None).split("; flags")[0]
    chosen_by = f"{how}; recorded in a serving copy made on {machine}"
    copy = ServingCopy(
        encoder.fingerprint, export.parent.name, encoder.backend, encoder.dtype, chosen_by
    )
    write_atomic(folder / SERVING_COPY_FILE, json.dumps(asdict(copy), indent=2).encode())
    removed = [path for pattern in WEIGHT_FILES for path in folder.glob(pattern)]
    removed += _float_graph_a_bf16_run_skips(export, encoder.dtype)
    removed += [p for p in export.parent.iterdir() if p.is_dir() and p != export]
    removed += [p for p in export.parent.parent.iterdir() if p.is_dir() and p != export.parent]
    freed = sum(_bytes(path) for path in removed)
    for path in removed:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    return copy, freed


def _float_graph_a_bf16_run_skips(export: Path, dtype: str) -> list[Path]:
    """An OpenVINO bf16 copy runs the graph with its vocabulary in int8, written beside the fp32
    graph (me5-small: 183 MB against 470 MB): its metadata now names that graph, and the fp32
    one goes."""
    from baihua.encoder.backends.export import read_meta, update_meta
    from baihua.encoder.backends.openvino_graph import INT8_VOCABULARY_IR

    meta = read_meta(export)
    if dtype != "bfloat16" or meta is None or not (export / INT8_VOCABULARY_IR).is_file():
        return []
    float_graph = export / meta["model_file"]
    if float_graph.name == INT8_VOCABULARY_IR:
        return []
    update_meta(export, model_file=INT8_VOCABULARY_IR)
    return [float_graph, float_graph.with_suffix(".bin")]


def _bytes(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size
