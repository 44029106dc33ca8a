"""Adapters loaded at run time, as vLLM's `/v1/load_lora_adapter` loads them: the request, the check that the
adapter can run on its base, and the model it becomes (a model of its own, on the base version's replicas)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from app.adapters import AdapterMismatch, check_adapter
from app.config import GraphConfig, ModelConfig
from app.config.base import NAME_PATTERN
from app.errors import InvalidRequest
from app.serving.adapters import AdapterRef, adapter_ref


class LoadLoraAdapter(BaseModel):
    """`POST /v1/load_lora_adapter`: vLLM's body, and the base version to serve the adapter on."""

    model_config = ConfigDict(extra="forbid")

    lora_name: str = Field(pattern=NAME_PATTERN, description="The model name clients will send.")
    lora_path: str = Field(min_length=1, description="The adapter's folder, as the base's replicas see it.")
    base_model: str | None = Field(
        default=None,
        description="`model` (its stable version) or `model/version`; default: the one version that sets lora.",
    )


class UnloadLoraAdapter(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lora_name: str = Field(min_length=1)


@dataclass(frozen=True)
class RuntimeAdapter:
    """An adapter loaded at run time: a model of its own, version `v1`, on a base version's replicas."""

    name: str
    base_model: str
    base_version: str
    path: str
    rank: int

    def model(self, config: GraphConfig) -> ModelConfig:
        base = config.base_version(self.base_model, self.base_version)
        version = {
            "version": RUNTIME_VERSION,
            "engine": base.engine.value,
            "weights": {"path": self.path},
            "adapter": {"base": f"{self.base_model}/{self.base_version}", "rank": self.rank},
        }
        return ModelConfig.model_validate({"name": self.name, "role": "chat", "versions": [version]})

    def ref(self, config: GraphConfig) -> AdapterRef:
        model = self.model(config)
        return adapter_ref(model, model.versions[0], config.resolved_weights_dir())


RUNTIME_VERSION = "v1"


def plan_load(config: GraphConfig, body: LoadLoraAdapter, loaded: Collection[str]) -> RuntimeAdapter:
    """The adapter `body` asks for, once its name is free, its base serves adapters and its files fit the base;
    else an InvalidRequest naming the field."""
    if config.model(body.lora_name) is not None or body.lora_name in loaded:
        raise InvalidRequest(f"The model '{body.lora_name}' already exists; unload it first.", param="lora_name")
    owner, label = _base_of(config, body.base_model)
    base = config.base_version(owner, label)
    if base.lora is None:
        raise InvalidRequest(f"The version {owner}/{label} does not serve adapters (no lora).", param="base_model")
    path = Path(body.lora_path)
    try:
        files = check_adapter(
            body.lora_name, path, base.weights.local_path(config.resolved_weights_dir()), base.lora.max_rank
        )
    except AdapterMismatch as exc:
        raise InvalidRequest(str(exc), param="lora_path") from None
    return RuntimeAdapter(body.lora_name, owner, label, str(path), files.rank)


def _base_of(config: GraphConfig, asked: str | None) -> tuple[str, str]:
    if asked is None:
        serving = [(m.name, v.version) for m in config.models for v in m.versions if v.lora is not None]
        if len(serving) != 1:
            names = [f"{m}/{v}" for m, v in serving]
            raise InvalidRequest(
                f"Name the base_model: the versions that serve adapters are {names}.", param="base_model"
            )
        return serving[0]
    owner, _, label = asked.partition("/")
    model = config.model(owner)
    if model is None or (label and label not in [v.version for v in model.versions]):
        raise InvalidRequest(f"The base_model '{asked}' is not a configured model or version.", param="base_model")
    return owner, label or model.stable_version
