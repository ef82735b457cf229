"""A sentence-transformers model folder read as sentence-transformers reads it.

`modules.json` lists the steps: a Transformer (the checkpoint, at the root or in a subfolder, with
`sentence_bert_config.json`: token limit, lower-casing), a Pooling (`config.json`: its modes and
whether the prompt is pooled), then any Dense and Normalize modules, run in order on the pooled
vector. `config_sentence_transformers.json` holds the named prompts and the default prompt name.
baihua runs exactly these four module types; any other is refused by name, never skipped.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

import numpy as np

from baihua.core.errors import UsageError
from baihua.encoder.dense import load_dense
from baihua.encoder.normalize import Normalize
from baihua.encoder.pooling import ST_MODES, Pooling

MODULES_FILE = "modules.json"
ST_CONFIG = "config_sentence_transformers.json"
TRANSFORMER_CONFIG = "sentence_bert_config.json"
# Files that describe the model beyond its transformer: hashed into its weights fingerprint.
ST_FILES = (MODULES_FILE, ST_CONFIG, TRANSFORMER_CONFIG)
PASSAGE_PROMPTS = ("document", "passage", "corpus")  # encode_document's order
# sentence-transformers' legacy Pooling keys, in the order it concatenates their vectors
_LEGACY_MODES = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}

Step = Callable[[np.ndarray], np.ndarray]


class UnsupportedModuleError(UsageError):
    """The folder has a module baihua cannot run; the message names it."""


@dataclass
class StFolder:
    """What a sentence-transformers folder says beyond the transformer's own files.

    Attributes
    ----------
    root : the folder; transformer : the checkpoint's folder (the root or a subfolder).
    pooling : the Pooling module's modes as a baihua pooling name (e.g. `cls`, `last-avg`).
    steps : the Dense and Normalize modules after the pooling, in order.
    max_length : the Transformer's token limit (None: the model's own).
    lower_case : whether texts are lower-cased before tokenising.
    query_prefix, passage_prefix : the prompts for queries and for passages.
    module_types : every module's type name, in order (for messages and listings).
    """

    root: Path
    transformer: Path
    pooling: str
    steps: list[Step] = field(default_factory=list)
    max_length: int | None = None
    lower_case: bool = False
    query_prefix: str = ""
    passage_prefix: str = ""
    module_types: list[str] = field(default_factory=list)

    def out_dim(self, pooled_dim: int) -> int:
        """The dimension after the steps, given the pooling's."""
        dim = pooled_dim
        for step in self.steps:
            dim = getattr(step, "out_features", dim)
        return dim


def is_st_folder(folder: str | Path | None) -> TypeGuard[str | Path]:
    return folder is not None and (Path(folder) / MODULES_FILE).is_file()


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except ValueError as error:
        raise UsageError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path} must hold a JSON object")
    return data


def pooling_name(config: dict[str, Any], where: Path) -> str:
    """A Pooling module's config (either sentence-transformers format) as a baihua pooling name."""
    modes = config.get("pooling_mode")
    if modes is None:
        legacy = [mode for key, mode in _LEGACY_MODES.items() if config.get(key, False)]
        modes = legacy or ["mean"]
    modes = [modes] if isinstance(modes, str) else list(modes)
    unknown = [mode for mode in modes if mode not in ST_MODES]
    if unknown:
        raise UnsupportedModuleError(f"{where}: unknown pooling mode {unknown[0]!r}")
    return Pooling(tuple(ST_MODES[mode] for mode in modes), config.get("include_prompt", True)).name


def prompts(config: dict[str, Any]) -> tuple[str, str]:
    """(query prefix, passage prefix): the `query` prompt and the first of `document`,
    `passage`, `corpus`; a text type without its own prompt gets the default prompt, as
    sentence-transformers' plain `encode` does."""
    named = {k: v for k, v in (config.get("prompts") or {}).items() if v is not None}
    default = named.get(config.get("default_prompt_name") or "", "")
    query = named.get("query", default)
    passage = next((named[n] for n in PASSAGE_PROMPTS if n in named), default)
    return query, passage


def _max_length(transformer: Path, config: dict[str, Any]) -> int | None:
    """`max_seq_length` of sentence_bert_config.json; newer sentence-transformers store the
    limit as the tokenizer's `model_max_length` instead."""
    if config.get("max_seq_length"):
        return int(config["max_seq_length"])
    limit = _read_json(transformer / "tokenizer_config.json").get("model_max_length")
    return int(limit) if isinstance(limit, int) and limit < 1_000_000 else None


def read_st_folder(folder: str | Path) -> StFolder:
    """Read `folder`'s modules; UnsupportedModuleError names a module baihua cannot run."""
    root = Path(folder)
    listed = json.loads((root / MODULES_FILE).read_text(encoding="utf-8"))
    if not isinstance(listed, list) or not listed:
        raise UsageError(f"{root / MODULES_FILE} must list the model's modules")
    types = [str(module.get("type", "")).rpartition(".")[2] for module in listed]
    paths = [root / str(module.get("path", "")) for module in listed]
    for position, kind in enumerate(types):
        expected = {0: ("Transformer",), 1: ("Pooling",)}.get(position, ("Dense", "Normalize"))
        if kind not in expected:
            raise UnsupportedModuleError(
                f"{root}: module {position} is {listed[position].get('type')!r}, which baihua "
                f"cannot run; it runs a Transformer, a Pooling, then Dense and Normalize modules"
            )
    if len(listed) < 2:
        raise UnsupportedModuleError(f"{root}: a Transformer without a Pooling module")
    transformer = paths[0]
    transformer_config = _read_json(transformer / TRANSFORMER_CONFIG)
    if transformer_config.get("transformer_task", "feature-extraction") != "feature-extraction":
        raise UnsupportedModuleError(
            f"{root}: Transformer task {transformer_config['transformer_task']!r}; baihua runs "
            "feature-extraction (encoder) models"
        )
    steps: list[Step] = [
        load_dense(path) if kind == "Dense" else Normalize()
        for kind, path in zip(types[2:], paths[2:], strict=True)
    ]
    query_prefix, passage_prefix = prompts(_read_json(root / ST_CONFIG))
    return StFolder(
        root=root,
        transformer=transformer,
        pooling=pooling_name(_read_json(paths[1] / "config.json"), paths[1]),
        steps=steps,
        max_length=_max_length(transformer, transformer_config),
        lower_case=bool(transformer_config.get("do_lower_case", False)),
        query_prefix=query_prefix,
        passage_prefix=passage_prefix,
        module_types=types,
    )


def module_folders(folder: Path) -> list[Path]:
    """The subfolders `modules.json` names (not the root), for the weights fingerprint."""
    try:
        listed = json.loads((folder / MODULES_FILE).read_text(encoding="utf-8"))
        return [
            folder / m["path"] for m in listed if m.get("path") and (folder / m["path"]).is_dir()
        ]
    except (OSError, ValueError, TypeError, KeyError):
        return []
