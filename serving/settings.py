"""The one settings object: defaults < configs/default.yaml (or --config) < BAIHUA_* env < CLI."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from baihua.configs import config_dir
from baihua.core.errors import BaihuaError

DEFAULT_CONFIG = config_dir() / "default.yaml"
BackendName = Literal["auto", "torch", "onnx", "onnx-int8", "openvino", "openvino-int8"]
DtypeName = Literal["float32", "bfloat16", "int8"]


class SettingsError(BaihuaError, ValueError):
    """A setting (flag, BAIHUA_* variable or YAML key) has a value that is not allowed."""


class Settings(BaseSettings):
    # An empty BAIHUA_* variable (`BAIHUA_CACHE_DIR=` in an env file) is unset, as for
    # `default_cache_dir`; taken as a path it would be the working directory.
    model_config = SettingsConfigDict(
        env_prefix="BAIHUA_", env_ignore_empty=True, extra="forbid", yaml_file=DEFAULT_CONFIG
    )

    # encoder
    model: str = "me5-small"
    pooling: str | None = None
    max_length: int | None = Field(None, ge=2)  # None: the model's own limit
    batch_size: int = Field(32, ge=1)
    max_batch_tokens: int = Field(4096, ge=2)  # padded tokens per batch (texts × longest)
    device: str = "auto"
    # auto: the fastest backend here within min cosine 0.99 of fp32; torch + float32 forces fp32
    backend: BackendName = "auto"
    dtype: DtypeName | None = None  # None: the backend's own
    num_threads: int | None = Field(None, ge=1)
    # OpenVINO requests run at once; 0: OpenVINO's throughput choice (2 streams of a thread on 2
    # cores), for `serve` and the bulk commands alike; 1: a lone request fastest, one set of buffers
    streams: int = Field(0, ge=0)
    cache_dir: Path | None = None
    whitening: Path | None = None

    # service
    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Path("data")
    index_factory: str = "Flat"
    # FAISS ParameterSpace settings for index_factory, "name=value,...": efSearch=384 (HNSW; the
    # store's default, with efConstruction=200), nprobe=16 (IVF); checked when the index opens,
    # free to change between starts (efConstruction only shapes vectors added after it)
    index_search_params: str = ""
    # the index engine: FAISS over SQLite in <data_dir>/index, or a Milvus collection
    index_backend: Literal["faiss", "milvus"] = "faiss"
    # a BM25 index over jieba words beside the FAISS one, in <data_dir>/sparse (not on Milvus)
    sparse_index: bool = True
    # /search without "mode": hybrid (dense + BM25, fused) where a sparse index exists, chosen
    # by the retrieval table in docs/results.md; dense elsewhere
    search_mode: Literal["dense", "sparse", "hybrid"] = "hybrid"
    search_fusion: Literal["rrf", "weighted"] = "weighted"
    milvus_uri: str | None = (
        None  # a .db file (embedded); http://host:19530; <data_dir>/index/milvus.db
    )
    milvus_token: str | None = None  # "user:password" or an API key for a server
    milvus_collection: str = "baihua"
    milvus_index_type: str = "FLAT"  # FLAT, IVF_FLAT, HNSW, ... (embedded: FLAT, IVF_FLAT)
    milvus_index_params: dict[str, Any] = Field(default_factory=dict)  # {"nlist": 1024}
    milvus_search_params: dict[str, Any] = Field(default_factory=dict)  # {"nprobe": 16}
    api_key: str | None = None
    max_texts_per_request: int = Field(256, ge=1)
    max_chars_per_text: int = Field(2000, ge=1)
    max_batch_size: int = Field(64, ge=1)
    max_wait_ms: float = Field(0.0, ge=0)  # > 0: hold a batch that long for more requests

    # bounded work: every limit is a 413 / 422 / 429 / 503 naming it, never unbounded memory or time
    max_request_bytes: int = Field(8 * 2**20, ge=1024)  # body size, checked before parsing (413)
    max_payload_bytes: int = Field(16 * 2**10, ge=2)  # one document's payload as JSON (422)
    max_payload_depth: int = Field(32, ge=1, le=64)  # nesting of a payload or filter (422)
    max_search_hits: int = Field(10_000, ge=1)  # queries x top_k in one /search (422)
    max_response_bytes: int = Field(32 * 2**20, ge=1024)  # one /search response (422)
    max_queued_texts: int = Field(4096, ge=1)  # texts waiting for the encoder (503)
    max_queued_texts_per_client: int | None = Field(None, ge=1)  # one API key's or host's (429)
    request_timeout_s: float = Field(10.0, gt=0)  # deadline from arrival to vectors (503)
    # encoding requests in progress at most (503/429 on arrival above it, or above what the
    # measured rate finishes within a quarter of request_timeout_s)
    max_in_flight: int = Field(512, ge=1)
    shutdown_grace_s: float = Field(20.0, ge=0, le=300)  # SIGTERM: in-flight work, then exit

    # geodesic re-ranking (`"rerank": "geodesic"` in /search)
    geodesic_k: int = Field(10, ge=1)  # neighbours per document in the kNN graph
    geodesic_candidates: int = Field(50, ge=1)  # hits re-ranked: max(4 * top_k, this)
    geodesic_reach: int = Field(64, ge=1)  # nearest nodes along the graph each one keeps

    @model_validator(mode="after")
    def _milvus_settings_need_milvus(self) -> Settings:
        if self.index_backend != "milvus":
            given = sorted(f for f in self.model_fields_set if f.startswith("milvus_"))
            if given:
                raise ValueError(
                    f"{', '.join(given)} set but index_backend is {self.index_backend!r}; set "
                    "index_backend=milvus (BAIHUA_INDEX_BACKEND) or drop them"
                )
        return self

    @model_validator(mode="after")
    def _faiss_settings_need_faiss(self) -> Settings:
        if self.index_backend != "faiss" and "index_search_params" in self.model_fields_set:
            raise ValueError(
                f"index_search_params set but index_backend is {self.index_backend!r}; Milvus "
                'takes milvus_search_params (BAIHUA_MILVUS_SEARCH_PARAMS), such as {"nprobe": 16}'
            )
        return self

    @property
    def milvus_location(self) -> str:
        """Where the Milvus collection lives: ``milvus_uri``, else the embedded engine's file."""
        return self.milvus_uri or str(self.data_dir / "index" / "milvus.db")

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
