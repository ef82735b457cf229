"""A model's weights fingerprint: the digest of its config, tokenizer and weight files — and, for
a sentence-transformers folder, of every module it lists (modules.json, the prompts, the Pooling
and Dense configs, the Dense weights), so two folders that give other vectors never share one.

Hashing a 470 MB checkpoint takes about a second, so the digest is cached in
``<cache>/fingerprints/`` keyed by the folder and every hashed file's size and modification time:
later starts only stat the files. Exported graphs, READMEs and anything else in the folder are not
hashed — adding an ONNX export beside the weights does not change the model.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
from pathlib import Path

from baihua.core.files import write_atomic
from baihua.encoder.serving_copy import read_serving_copy

# What `from_pretrained` reads to build the tokenizer and the transformer.
_HASHED = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "*.model",
    "*.safetensors",
    "*.safetensors.index.json",
    "pytorch_model*.bin",
    "pytorch_model.bin.index.json",
)
_CHUNK = 1 << 20


def model_folder(source: str) -> Path | None:
    """The local folder `from_pretrained(source)` reads: ``source`` itself, or the hub cache's
    snapshot of it; None if neither is on disk."""
    if Path(source).is_dir():
        return Path(source).resolve()
    from transformers.utils import cached_file

    try:
        config = cached_file(source, "config.json", local_files_only=True)
    except OSError:
        return None
    return None if config is None else Path(config).parent


def hashed_files(folder: Path) -> list[Path]:
    """The files of ``folder`` that define the model: the transformer's and, in a
    sentence-transformers folder, its own files and those of each module's subfolder; sorted by
    their path in ``folder``."""
    from baihua.encoder.st_folder import ST_FILES, module_folders

    own = [p for p in folder.iterdir() if p.is_file() and _hashed(p.name, _HASHED + ST_FILES)]
    modules = [
        path
        for sub in module_folders(folder)
        for path in sub.iterdir()
        if path.is_file() and _hashed(path.name, (*_HASHED, "*.json"))
    ]
    return sorted(own + modules, key=lambda path: path.relative_to(folder).as_posix())


def _hashed(name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatch(name, pattern) for pattern in patterns)


def model_fingerprint(source: str, cache_dir: Path) -> str:
    """sha256 over the name and content of each file that defines the model in ``source`` (a
    folder or a hub id in the local hub cache); reused from ``cache_dir`` while no file changed.
    A source not on disk gets ``"unhashed:" + source``, compared by name only."""
    folder = model_folder(source)
    if folder is None:
        return f"unhashed:{source}"
    serving_copy = read_serving_copy(folder)
    if serving_copy is not None:
        return serving_copy.fingerprint  # its weights were hashed before they were removed
    files = hashed_files(folder)
    stats = [[_name(f, folder), (s := f.stat()).st_size, s.st_mtime_ns] for f in files]
    record_file = (
        cache_dir / "fingerprints" / f"{hashlib.sha1(str(folder).encode()).hexdigest()[:16]}.json"
    )
    try:
        record = json.loads(record_file.read_text())
        if record["folder"] == str(folder) and record["files"] == stats:
            return str(record["digest"])
    except (OSError, ValueError, KeyError, TypeError):
        pass  # not cached yet, or unreadable: hash again
    digest = _digest(files, folder)
    record_file.parent.mkdir(parents=True, exist_ok=True)
    record = {"folder": str(folder), "files": stats, "digest": digest}
    write_atomic(record_file, json.dumps(record).encode())
    return digest


def _name(path: Path, folder: Path) -> str:
    """The file's path in the model folder (just its name at the top, as before modules)."""
    return path.relative_to(folder).as_posix()


def _digest(files: list[Path], folder: Path) -> str:
    total = hashlib.sha256()
    for path in files:
        content = hashlib.sha256()
        with open(path, "rb") as file:
            while chunk := file.read(_CHUNK):
                content.update(chunk)
        total.update(f"{_name(path, folder)}\0{content.hexdigest()}\n".encode())
    return total.hexdigest()
