"""Guards in front of the models: priority classes and queue bounds, the response cache, API keys and limits."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field, model_validator

from app.config.base import Strict


class Priority(StrEnum):
    REALTIME = "realtime"
    BATCH = "batch"


class QueueConfig(Strict):
    """Admission at each ingress replica: batch requests are shed first when the model's queue is full."""

    max_in_flight: int = Field(
        default=256, ge=1, description="Requests of all classes in flight to this model; beyond it batch gets 429."
    )
    realtime_max_in_flight: int = Field(
        default=512, ge=1, description="Realtime requests in flight to this model; beyond it realtime gets 503."
    )


class CacheBackend(StrEnum):
    MEMORY = "memory"
    REDIS = "redis"


class CacheConfig(Strict):
    """Response cache for deterministic requests (temperature 0 or a fixed seed; embeddings; rerank)."""

    enabled: bool = Field(default=False, description="Serve repeated deterministic requests from the cache.")
    backend: CacheBackend = Field(default=CacheBackend.MEMORY, description="memory (per ingress replica) or redis.")
    ttl_s: float = Field(default=300.0, gt=0, description="How long an entry lives.")
    max_entries: int = Field(default=10_000, ge=1, description="Entries kept in memory (least recently used go).")
    redis_url: str | None = Field(default=None, description="redis://host:port/db, for the redis backend.")
    timeout_s: float = Field(default=0.05, gt=0, description="A cache slower than this is bypassed, not waited for.")

    @model_validator(mode="after")
    def _redis_needs_url(self) -> CacheConfig:
        if self.backend is CacheBackend.REDIS and not self.redis_url:
            raise ValueError("backend 'redis' needs redis_url")
        return self


class AuthConfig(Strict):
    """API keys (Authorization: Bearer), one per line in a file or comma-separated in an environment variable."""

    enabled: bool = Field(default=False, description="Require an API key on /v1 and /admin.")
    keys_env: str | None = Field(default="INFERENCE_GRAPH_API_KEYS", description="Variable holding client keys.")
    keys_file: str | None = Field(default=None, description="File of client keys (a mounted Secret).")
    admin_keys_env: str | None = Field(
        default="INFERENCE_GRAPH_ADMIN_KEYS", description="Variable holding admin keys (also valid as client keys)."
    )
    admin_keys_file: str | None = Field(default=None, description="File of admin keys.")
    requests_per_minute: int | None = Field(default=None, ge=1, description="Requests one key may make per minute.")
    tokens_per_minute: int | None = Field(default=None, ge=1, description="Tokens one key may use per minute.")


class GuardsConfig(Strict):
    auth: AuthConfig = Field(default_factory=AuthConfig, description="API keys and per-key limits.")
    cache: CacheConfig = Field(default_factory=CacheConfig, description="Response cache.")
    priority_header: str = Field(default="x-priority", description="Header naming the request class.")
    default_priority: Priority = Field(default=Priority.REALTIME, description="Class of a request without one.")
    log_prompts: bool = Field(default=False, description="Log prompts and completions (off: never logged).")


class LimitsConfig(Strict):
    max_body_bytes: int = Field(default=1_048_576, ge=1024, description="Largest request body; larger gets 413.")
    request_timeout_s: float = Field(default=300.0, gt=0, description="Longest wait for a model's answer (504).")
    max_embedding_inputs: int = Field(default=2048, ge=1, description="Most inputs in one embeddings request.")
    max_rerank_documents: int = Field(default=1000, ge=1, description="Most documents in one rerank request.")
