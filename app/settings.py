"""The one settings object: defaults < configs/default.yaml (or --config) < BAIHUA_* env < CLI."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from baihua.configs import config_dir
from baihua.core.errors import BaihuaError

DEFAULT_CONFIG = config_dir() / "default.yaml"


class SettingsError(BaihuaError, ValueError):
    """A setting (flag, BAIHUA_* variable or YAML key) has a value that is not allowed."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="BAIHUA_", extra="forbid", yaml_file=DEFAULT_CONFIG
    )

    # encoder
    model: str = "me5-small"
    pooling: str | None = None
    max_length: int | None = Field(None, ge=2)  # None: the model's own limit
    batch_size: int = Field(32, ge=1)
    device: str = "auto"
    dtype: Literal["float32", "bfloat16"] = "float32"
    num_threads: int | None = Field(None, ge=1)
    cache_dir: Path | None = None
    whitening: Path | None = None

    # service
    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Path("data")
    index_factory: str = "Flat"
    api_key: str | None = None
    max_texts_per_request: int = Field(256, ge=1)
    max_chars_per_text: int = Field(2000, ge=1)
    max_batch_size: int = Field(64, ge=1)
    max_wait_ms: float = Field(5.0, ge=0)
    queue_size: int = Field(1024, ge=1)

    # geodesic re-ranking (`"rerank": "geodesic"` in /search)
    geodesic_k: int = Field(10, ge=1)  # neighbours per document in the kNN graph
    geodesic_candidates: int = Field(50, ge=1)  # hits re-ranked: max(4 * top_k, this)
    geodesic_hops: int = Field(1, ge=0)  # graph steps around the candidates a path may take

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, YamlConfigSettingsSource(settings_cls)


def load_settings(config: Path | None = None, **overrides: Any) -> Settings:
    """Settings from `config` (else $BAIHUA_CONFIG, else configs/default.yaml), env, then the
    overrides that are not None (CLI flags left unset)."""
    if config is None and os.environ.get("BAIHUA_CONFIG"):
        config = Path(os.environ["BAIHUA_CONFIG"])
    settings_cls: type[Settings] = Settings
    if config is not None:
        if not config.is_file():
            raise FileNotFoundError(f"config file {config} does not exist")
        settings_cls = type(  # type: ignore[assignment]
            "Settings",
            (Settings,),
            {"model_config": {**Settings.model_config, "yaml_file": config}},
        )
    try:
        return settings_cls(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(map(str, error['loc']))}: {error['msg']} (got {error['input']!r})"
            for error in err.errors()
        )
        raise SettingsError(f"invalid settings: {problems}") from None
