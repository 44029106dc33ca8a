"""The whole graph: its ingress, observability and start-up checks, and `load_config` that validates it all."""

from __future__ import annotations

import os
import re
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, model_validator

from app.config.base import Strict, repeated
from app.config.guards import GuardsConfig, LimitsConfig
from app.config.models import ModelConfig, ModelVersion, Role
from app.config.traffic import RoutingConfig
from app.weights import PackagedWeights, WeightsNotPrepared, default_weights_dir

GRAPH_IMPORT_PATH = "deployments.graph:build_app"  # the serve application whose `args` are a GraphConfig

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
        return missing

    def packaged_weights(self) -> list[PackagedWeights]:
        """The packages that ship this graph's weights, each once, in the order the versions name them."""
        named = (version.weights.package for model in self.models for version in model.versions)
        return list(dict.fromkeys(package for package in named if package is not None))

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


def deployment_name(model: ModelConfig, version: ModelVersion) -> str:
    """Ray Serve deployment name of one model version, e.g. `chat-smollm2-v1`."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", f"{model.role.value}-{model.name}-{version.version}")
