"""The whole graph: its ingress, observability and start-up checks, and `load_config` that validates it all."""

from __future__ import annotations

import os
import re
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, model_validator

from app.adapters import AdapterMismatch, check_adapter
from app.config.base import Strict, repeated
from app.config.guards import GuardsConfig, LimitsConfig
from app.config.models import ModelConfig, ModelVersion, Role
from app.config.traffic import RoutingConfig
from app.weights import BuiltAdapter, PackagedWeights, WeightsNotPrepared, default_weights_dir

GRAPH_IMPORT_PATH = "deployments.graph:build_app"  # the serve application whose `args` are a GraphConfig


class IngressConfig(Strict):
    num_replicas: int = Field(default=1, ge=1, le=1024, description="Ingress replicas.")
    num_cpus: float = Field(default=0.25, gt=0, le=256, description="CPUs Ray reserves per ingress replica.")
    max_replicas_per_node: int | None = Field(
        default=None,
        ge=1,
        le=100,
        description="Most ingress replicas on one Ray node; 1 with num_replicas = nodes puts one beside each node's "
        "HTTP proxy.",
    )
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
        duplicates = repeated(names)
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

    @model_validator(mode="after")
    def _adapters_on_bases(self) -> GraphConfig:
        for model in self.models:
            for version in model.versions:
                if version.adapter is None:
                    continue
                where = f"{model.name}@{version.version}"
                owner, label = version.adapter.base_version(model.name)
                base_model = self.model(owner)
                base = next((v for v in base_model.versions if v.version == label), None) if base_model else None
                if base_model is None or base is None:
                    raise ValueError(f"adapter {where}: its base {version.adapter.base!r} is not a configured version")
                if model.role is not Role.CHAT or base_model.role is not Role.CHAT:
                    raise ValueError(f"adapter {where}: adapters serve chat models only")
                if base.lora is None:
                    raise ValueError(f"adapter {where}: its base {owner}@{label} does not set lora (lora: {{}})")
                if base.engine is not version.engine:
                    raise ValueError(
                        f"adapter {where} names engine {version.engine.value!r}, but its base {owner}@{label} runs "
                        f"on {base.engine.value!r}"
                    )
                if version.adapter.rank > base.lora.max_rank:
                    raise ValueError(
                        f"adapter {where} has rank {version.adapter.rank}, above its base {owner}@{label}'s "
                        f"lora.max_rank {base.lora.max_rank}"
                    )
        return self

    def serves_adapters(self) -> bool:
        """Whether a version sets `lora` (the graph then keeps a registry of adapters loaded at run time)."""
        return any(v.lora is not None for m in self.models for v in m.versions)

    def parent(self, model: ModelConfig) -> str | None:
        """The base model an adapter model's stable version runs on (`/v1/models` lists it as the parent)."""
        base_model, _ = self.base_of(model, model.serving_version)
        return base_model.name if base_model is not model else None

    def base_version(self, model: str, version: str) -> ModelVersion:
        found = self.model(model)
        if found is None:
            raise KeyError(model)
        return found.version(version)

    def base_of(self, model: ModelConfig, version: ModelVersion) -> tuple[ModelConfig, ModelVersion]:
        """The model version whose replicas serve `version`: its base for an adapter, else itself."""
        if version.adapter is None:
            return model, version
        owner, label = version.adapter.base_version(model.name)
        base_model = self.model(owner)
        if base_model is None:
            raise KeyError(owner)
        return base_model, base_model.version(label)

    def resolved_weights_dir(self) -> Path:
        return Path(self.weights_dir).expanduser().resolve() if self.weights_dir else default_weights_dir()

    def missing_weights(self) -> list[str]:
        """One line per model version whose weights cannot be found here."""
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
                elif version.adapter is not None:
                    missing += [f"  {where}: {problem}" for problem in self._adapter_problems(model, version, path)]
        return missing

    def _adapter_problems(self, model: ModelConfig, version: ModelVersion, path: Path) -> list[str]:
        """What keeps an adapter's files from running on its base: a rank above the base's bound or different from
        the config's, or target modules the base lacks."""
        _, base = self.base_of(model, version)
        if base.weights.hub is not None or base.lora is None or version.adapter is None:
            return []
        try:
            base_path = base.weights.local_path(self.resolved_weights_dir())
            files = check_adapter(adapter_name(model, version), path, base_path, base.lora.max_rank)
        except (AdapterMismatch, WeightsNotPrepared) as exc:
            return [str(exc)]
        if files.rank != version.adapter.rank:
            where = path / "adapter_config.json"
            return [f"the adapter's rank is {files.rank} in {where}, but adapter.rank says {version.adapter.rank}"]
        return []

    def packaged_weights(self) -> list[PackagedWeights]:
        """The packages that ship this graph's weights, each once, in the order the versions name them."""
        named = (version.weights.package for model in self.models for version in model.versions)
        return list(dict.fromkeys(package for package in named if package is not None))

    def built_adapters(self) -> list[BuiltAdapter]:
        """The LoRA adapters `make install` builds for this graph, each once, in the order the versions name them."""
        named = (version.weights.adapter for model in self.models for version in model.versions)
        return list(dict.fromkeys(adapter for adapter in named if adapter is not None))

    def model(self, name: str) -> ModelConfig | None:
        return next((m for m in self.models if m.name == name), None)


class ConfigError(ValueError):
    """A serve config that does not validate; the message names each field and its value."""


def parse_config(args: dict[str, Any]) -> GraphConfig:
    """The graph's config from the application's `args`, without looking for its weights (`load_config` does)."""
    try:
        return GraphConfig.model_validate(args)
    except ValidationError as exc:
        lines = [
            f"  {'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']} (got {_short(err.get('input'))})"
            for err in exc.errors()
        ]
        raise ConfigError("invalid serve config:\n" + "\n".join(lines)) from None


def load_config(args: dict[str, Any]) -> GraphConfig:
    """The graph's config from the application's `args`, once every version's weights are found (unless
    `verify_weights` is off)."""
    config = parse_config(args)
    missing = config.missing_weights() if config.verify_weights else []
    if missing:
        raise ConfigError("model weights not found:\n" + "\n".join(missing))
    return config


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def adapter_name(model: ModelConfig, version: ModelVersion) -> str:
    """The name an adapter version is loaded under on its base's replicas (vLLM's LoRA name, Serve's multiplexed
    model id), e.g. `smollm2:v3`; answers carry the model's own name."""
    return f"{model.name}:{version.version}"


def deployment_name(model: ModelConfig, version: ModelVersion) -> str:
    """Ray Serve deployment name of one model version, e.g. `chat-smollm2-v1`."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", f"{model.role.value}-{model.name}-{version.version}")
