"""Open a backend by name: load or export what it runs, check it against fp32 once, and resolve
`auto` to the fastest backend on this machine that keeps min cosine ≥ 0.99 to fp32."""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import logging
import os
import platform
from importlib.metadata import PackageNotFoundError
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from baihua.core.errors import UsageError
from baihua.core.progress import logged_step
from baihua.encoder.backends.base import BACKEND_CHOICES, Backend, ModelLoadError, default_threads
from baihua.encoder.backends.calibration import (
    CALIBRATION_SET,
    MIN_COSINE,
    Agreement,
    agreement,
    pooled,
    throughputs,
    tokenized_batches,
)
from baihua.encoder.backends.export import (
    QUANTIZATION,
    build_atomically,
    export_key,
    exports_root,
    key_digest,
    read_meta,
    remove_stale,
    update_meta,
)
from baihua.encoder.backends.onnx_backend import INT8_RUN, OnnxBackend
from baihua.encoder.backends.openvino_backend import (
    BF16_RECIPE,
    OpenVinoBackend,
    default_precision,
)
from baihua.encoder.backends.openvino_export import (
    GENERIC_INT8,
    OV_CONVERSION,
    Int8Recipe,
    convert_fp32,
    is_current,
    openvino_versions,
    quantize_static_int8,
)
from baihua.encoder.fingerprint import model_folder
from baihua.encoder.serving_copy import ServingCopy, read_serving_copy
from baihua.encoder.tokenizer import TextTokenizer

if TYPE_CHECKING:  # torch and transformers are imported only where a backend needs them
    from transformers import PreTrainedModel

    from baihua.encoder.backends.torch_backend import TorchBackend

logger = logging.getLogger(__name__)

DTYPES = {
    "torch": ("float32", "bfloat16"),
    "onnx": ("float32",),
    "onnx-int8": ("int8",),
    "openvino": ("float32", "bfloat16"),
    "openvino-int8": ("int8",),
}


SPEED_TIE = 0.95
WEIGHT_BYTES = {"int8": 1, "bfloat16": 2, "float32": 4}


def check_backend(backend: str, dtype: str | None, device: str) -> None:
    """Refuse combinations that cannot run rather than guess what was meant."""
    if backend not in BACKEND_CHOICES:
        raise UsageError(f"unknown backend {backend!r}; choose one of {', '.join(BACKEND_CHOICES)}")
    if backend == "auto":
        if dtype is not None:
            raise UsageError(
                f"dtype {dtype!r} needs an explicit backend (e.g. backend torch); "
                "auto chooses the dtype itself"
            )
        return
    if dtype is not None and dtype not in DTYPES[backend]:
        raise UsageError(
            f"backend {backend} runs dtype {' or '.join(DTYPES[backend])}, not {dtype!r}"
        )
    if backend != "torch" and device != "cpu":
        raise UsageError(f"backend {backend} runs on the CPU; use device cpu or backend torch")


class Backends:
    """Everything one model's backends share: its folder, its export key, a lazily loaded
    transformers model (for the torch backend, exports and the fp32 reference)."""

    def __init__(
        self,
        model_name: str,
        path: str,
        *,
        cache_dir: Path,
        tokenizer: TextTokenizer,
        device: str,
        num_threads: int | None,
        prefix: str = "",
        streams: int = 1,
        int8_recipe: Int8Recipe = GENERIC_INT8,
    ) -> None:
        self.model_name = model_name
        self.int8_recipe = int8_recipe
        self.streams = streams
        self.prefix = prefix
        self.path = path
        self.cache_dir = cache_dir
        self.tokenizer = tokenizer
        self.device = device
        self.num_threads = num_threads
        self._model: PreTrainedModel | None = None

    def open(self, backend: str, dtype: str | None = None) -> Backend:
        check_backend(backend, dtype, self.device)
        if self.serving_copy is not None:
            return self.open_serving_copy(self.serving_copy, backend)
        if backend == "auto":
            return self.auto()
        if backend == "torch":
            from baihua.encoder.backends.torch_backend import TorchBackend

            return TorchBackend(self.model(), self.device, dtype or "float32")
        return self._runner(self.prepare(backend), backend, dtype)

    def _runner(
        self, folder: Path, backend: str, dtype: str | None = None, streams: int | None = None
    ) -> Backend:
        """The ONNX Runtime or OpenVINO backend over the export in `folder`; OpenVINO with
        `streams` (None: the encoder's)."""
        if backend.startswith("openvino"):
            precision = dtype if dtype in ("float32", "bfloat16") else None
            streams = self.streams if streams is None else streams
            return OpenVinoBackend(folder, backend, self.num_threads, precision, streams)
        return OnnxBackend(folder, backend, self.num_threads)

    @functools.cached_property
    def serving_copy(self) -> ServingCopy | None:
        return read_serving_copy(model_folder(self.path))

    def open_serving_copy(self, copy: ServingCopy, backend: str) -> Backend:
        """The one backend a serving copy keeps; `auto` is the choice recorded when it was made
        (it cannot measure: the fp32 reference is gone)."""
        if backend not in ("auto", copy.backend):
            raise ModelLoadError(
                f"{model_folder(self.path)} is a serving copy of {self.model_name} for backend "
                f"{copy.backend} (its weights were removed): use backend {copy.backend} or auto, "
                "or remove the folder and prepare the model again"
            )
        target = self.export_dir() / copy.backend
        if read_meta(target) is None:
            raise ModelLoadError(
                f"{target} is missing or incomplete: this serving copy cannot rebuild it; remove "
                f"{model_folder(self.path)} and prepare the model again"
            )
        runner = self._runner(target, copy.backend, copy.dtype)
        return chosen(runner, copy.chosen_by) if backend == "auto" else runner

    def model(self) -> PreTrainedModel:
        if self._model is None:
            if importlib.util.find_spec("torch") is None:
                raise ModelLoadError(
                    f"{self.model_name}: backend torch, and building an export, need torch, "
                    "which is not installed here (pip install torch==2.13.0)"
                )
            import torch

            from baihua.encoder.backends.torch_backend import load_transformer

            if self.num_threads:
                torch.set_num_threads(self.num_threads)
            self._model = load_transformer(self.path, self.model_name)
        return self._model

    def folder(self) -> Path:
        """The model's local folder (a hub id resolves to its downloaded snapshot)."""
        folder = model_folder(self.path)
        if folder is None:
            raise ModelLoadError(
                f"cannot find a local copy of {self.model_name!r} to export for ONNX Runtime; "
                "use backend torch"
            )
        return folder

    def export_dir(self) -> Path:
        """`<cache>/models/<model>.onnx/<key>`: one folder per model version × library versions."""
        folder = self.folder()
        if self.serving_copy is not None:
            return exports_root(self.cache_dir, self.model_name, folder) / self.serving_copy.export
        try:
            key = export_key(folder, self.cache_dir)
        except PackageNotFoundError as err:
            raise ModelLoadError(
                f"{self.model_name}: its exports are named by the versions of the libraries that "
                f"build them, and {err.name} is not installed here: install it, or serve a "
                "serving copy (`baihua models prepare --serving-only`)"
            ) from err
        return exports_root(self.cache_dir, self.model_name, folder) / key_digest(key)

    def prepare(self, backend: str) -> Path:
        """The export `backend` runs, built (and checked against fp32 torch) if missing. The fp32
        ONNX graph is needed only to build the int8 ones: a complete copy runs without it; the
        fp32 OpenVINO copy is converted from the PyTorch model (see `openvino_export`)."""
        assert backend in DTYPES and backend != "torch", backend
        key_dir = self.export_dir()
        fp32 = key_dir / "onnx"
        target = fp32 if backend == "onnx" else key_dir / backend
        int8 = backend == "openvino-int8"
        if backend == "onnx-int8":
            built = (read_meta(target) or {}).get("quantization") == QUANTIZATION
        else:
            built = read_meta(target) is not None
            built = built and (
                not backend.startswith("openvino")
                or is_current(target, self.int8_recipe if int8 else None)
            )
        if not built:
            key = export_key(self.folder(), self.cache_dir)
            remove_stale(key_dir.parent, keep=key_dir.name)
        if not built and backend != "openvino" and read_meta(fp32) is None:
            from baihua.encoder.backends.onnx_export import export_fp32

            with logged_step(logger, f"{self.model_name}: exporting to ONNX (fp32) in {fp32}"):
                build_atomically(fp32, lambda tmp: {**export_fp32(self.model(), tmp), "key": key})
        if not built and backend == "onnx-int8":
            from baihua.encoder.backends.onnx_export import quantize_int8

            with logged_step(logger, f"{self.model_name}: quantising to onnx-int8 in {target}"):
                build_atomically(target, lambda tmp: quantize_int8(fp32, tmp))
        elif not built and backend.startswith("openvino"):
            batches = self.calibration_batches

            def build(tmp: Path) -> dict[str, Any]:
                if int8:
                    return quantize_static_int8(fp32, tmp, batches, self.int8_recipe)
                return {**convert_fp32(self.model(), tmp), "key": key}

            with logged_step(logger, f"{self.model_name}: building {backend} in {target}"):
                build_atomically(target, build)
        meta = read_meta(target)
        assert meta is not None
        check = self.check_id(backend)
        if meta.get("calibration", {}).get("check") != check:
            runner = self._runner(target, backend, streams=1)
            with logged_step(logger, f"{self.model_name}: checking {backend} against fp32"):
                checked = agreement(runner, self.reference_vectors, self.calibration_batches)
            update_meta(target, calibration=checked.as_dict() | {"check": check})
        return target

    def check_id(self, backend: str = "") -> str:
        """Names the calibration a stored check used: the fixed set's version and the prefix
        (and, for OpenVINO, the precision its float parts ran in; for onnx-int8, how it runs)."""
        check = f"set {CALIBRATION_SET}, prefix {self.prefix!r}"
        if backend.startswith("openvino"):
            return f"{check}, {default_precision()}"
        return f"{check}, {INT8_RUN}" if backend == "onnx-int8" else check

    def reference(self) -> TorchBackend:
        from baihua.encoder.backends.torch_backend import TorchBackend

        return TorchBackend(self.model(), "cpu", "float32")

    @functools.cached_property
    def calibration_batches(self) -> list[tuple[np.ndarray, np.ndarray]]:
        return tokenized_batches(self.tokenizer, self.prefix)

    @functools.cached_property
    def reference_vectors(self) -> np.ndarray:
        """fp32 torch's vectors of the calibration set, which every backend is checked against:
        computed once, not once per check."""
        return pooled(self.reference(), self.calibration_batches)

    def auto(self) -> Backend:
        """The stored choice for this machine; else one stored on another machine for the same
        calibration and recipes (an image built elsewhere: no minutes of measuring at start);
        else measure every backend and store the choice. The runner's `chosen_by` says which."""
        if self.device != "cpu":
            return self.open("torch", "float32")  # ONNX backends are CPU-only
        recipes = auto_recipes(self.int8_recipe)
        key = machine_key(self.num_threads, f"{self.check_id()}; {recipes}")
        choice_file = self.export_dir() / f"auto-{key}.json"
        try:
            stored = json.loads(choice_file.read_text())
            return chosen(self.open(stored["backend"], stored["dtype"]), "auto, measured here")
        except (OSError, ValueError, KeyError):
            pass
        elsewhere = stored_elsewhere(choice_file.parent, self.check_id(), recipes)
        if elsewhere is not None:
            machine = str(elsewhere.get("machine", "")).split("; flags")[0] or "another machine"
            note = f"auto, measured on {machine}, not here (`baihua models prepare --backend auto`)"
            logger.warning("backend %s: %s", elsewhere["backend"], note)
            return chosen(self.open(elsewhere["backend"], elsewhere["dtype"]), note)
        what = f"{self.model_name}: backend auto measuring every backend here (once; stored)"
        with logged_step(logger, what):
            choice, candidates = self.measure()
        if self.streams != 1 and choice.name.startswith("openvino"):
            choice = self.open(choice.name, choice.dtype)  # measured one request at a time
        record: dict[str, Any] = {"backend": choice.name, "dtype": choice.dtype}
        record["candidates"] = candidates
        record |= {"min_cosine": MIN_COSINE, "calibration": self.check_id(), "recipes": recipes}
        record |= {"machine": machine_description(self.num_threads)}
        tmp = choice_file.with_name(f".{choice_file.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(record, indent=2))
        os.replace(tmp, choice_file)
        logger.info("backend auto chose %s (%s)", choice.name, choice.dtype)
        return chosen(choice, "auto, measured here")

    def measure(self) -> tuple[Backend, list[dict[str, Any]]]:
        """Time every backend on the calibration set; `auto_pick` chooses."""
        batches = self.calibration_batches
        reference = self.reference()
        bf16 = self.open("torch", "bfloat16")
        candidates: list[tuple[Backend, Agreement]] = [
            (reference, Agreement(1.0, 1.0)),
            (bf16, agreement(bf16, self.reference_vectors, batches)),
        ]
        names = ["onnx", "onnx-int8", "openvino"] + (["openvino-int8"] if nncf_installed() else [])
        for name in names:  # one request at a time, as `throughputs` calls them
            runner = self._runner(self.prepare(name), name, streams=1)
            stored = getattr(runner, "calibration", None)
            assert stored is not None
            candidates.append((runner, Agreement(stored["min_cosine"], stored["mean_cosine"])))
        allowed = [checked.min_cosine >= MIN_COSINE for _, checked in candidates]
        speeds = throughputs([backend for backend, _ in candidates], batches, allowed)
        rows = [
            {"backend": backend.name, "dtype": backend.dtype, "sentences_per_s": speed,
             "timed_passes": passes} | checked.as_dict()
            for (backend, checked), (speed, passes) in zip(candidates, speeds, strict=True)
        ]  # fmt: skip
        best = candidates[auto_pick(rows)][0]
        return best, rows


def auto_pick(rows: list[dict[str, Any]]) -> int:
    """The row auto chooses: of the backends within MIN_COSINE of fp32, those within SPEED_TIE
    of the fastest are a tie (the measurement's noise), and a tie goes to the smallest weights,
    then the fastest: a server's memory is mostly its weights (me5-small: openvino bf16 and int8
    ran 515 and 513 texts/s, and int8 holds half the bytes)."""
    allowed = [i for i, row in enumerate(rows) if row["min_cosine"] >= MIN_COSINE]
    fastest = max(rows[i]["sentences_per_s"] for i in allowed)
    tied = [i for i in allowed if rows[i]["sentences_per_s"] >= SPEED_TIE * fastest]
    return min(tied, key=lambda i: (WEIGHT_BYTES[rows[i]["dtype"]], -rows[i]["sentences_per_s"]))


def auto_recipes(int8: Int8Recipe = GENERIC_INT8) -> str:
    """The quantisation recipes (`int8`: the model's openvino-int8 one) and library versions a
    stored auto choice was measured with."""
    versions = openvino_versions(int8=True) if nncf_installed() else openvino_versions(False)
    recipes = [QUANTIZATION, INT8_RUN, OV_CONVERSION, BF16_RECIPE, int8.name]
    return "; ".join([*recipes, str(versions)])


def chosen(backend: Backend, how: str) -> Backend:
    """`backend`, marked with how auto chose it (the server's start-up line says it)."""
    backend.chosen_by = how  # type: ignore[attr-defined]
    return backend


def stored_elsewhere(folder: Path, calibration: str, recipes: str) -> dict[str, Any] | None:
    """A choice stored in `folder` on another machine for this calibration and these recipes
    (the newest), or None."""
    for path in sorted(folder.glob("auto-*.json"), key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            record: dict[str, Any] = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if record.get("calibration") == calibration and record.get("recipes") == recipes:
            return record
    return None


def machine_description(num_threads: int | None) -> str:
    """CPU model and instruction sets (what decides the fastest backend) and the thread count."""
    model, flags = platform.processor(), ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and not model:
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}; flags {flags}; threads {num_threads or default_threads()}"


def machine_key(num_threads: int | None, check: str) -> str:
    """Names a stored auto choice: this machine, this thread count, this calibration."""
    text = f"{machine_description(num_threads)}; {check}"
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def nncf_installed() -> bool:
    """openvino-int8 needs nncf; without it auto leaves that backend out."""
    return importlib.util.find_spec("nncf") is not None
