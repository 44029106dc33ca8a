"""A request for a LoRA adapter, as the base version's replica serves it: the adapter the ingress names, the request
under the adapter's name (the engine picks the adapter by the `model` field, as vLLM's server does), and the answer
under the model's own name again."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel

from app.adapters import AdapterMismatch, check_adapter
from app.config import GraphConfig, ModelConfig, ModelVersion, adapter_name
from app.errors import InvalidRequest, OpenAIError
from app.protocol import ChatCompletionRequest, CompletionRequest

GenerationRequest = ChatCompletionRequest | CompletionRequest
Answer = TypeVar("Answer")


@dataclass(frozen=True)
class AdapterRef:
    """The adapter a request runs with: `name` is what the base's replicas load it under (Serve's multiplexed model
    id), `path` its folder, `model` the name the client asked for and gets back."""

    name: str
    path: str
    model: str


class AdapterHost(Protocol):
    """An engine that loads LoRA adapters next to its base model. Both raise an OpenAIError naming the adapter."""

    async def load_adapter(self, name: str, path: str) -> None: ...

    async def unload_adapter(self, name: str) -> None: ...


def adapter_ref(model: ModelConfig, version: ModelVersion, weights_dir: Path) -> AdapterRef:
    """The adapter version `version` of `model`, with its folder on this node."""
    return AdapterRef(adapter_name(model, version), str(version.weights.local_path(weights_dir)), model.name)


def configured_adapters(config: GraphConfig) -> dict[tuple[str, str], AdapterRef]:
    """Every version of the config that is an adapter, by (model, version), with its folder on this node."""
    weights_dir = config.resolved_weights_dir()
    return {
        (model.name, version.version): adapter_ref(model, version, weights_dir)
        for model in config.models
        for version in model.versions
        if version.adapter is not None
    }


def for_adapter(request: GenerationRequest, adapter: AdapterRef) -> GenerationRequest:
    """The request as the engine sees it: its model is the adapter's name."""
    return request.model_copy(update={"model": adapter.name})


def answered_as(answer: Answer, adapter: AdapterRef) -> Answer:
    """A unary answer under the model's name instead of the adapter's."""
    if isinstance(answer, BaseModel) and getattr(answer, "model", None) == adapter.name:
        return answer.model_copy(update={"model": adapter.model})  # type: ignore[return-value]
    return answer


def event_as(event: Any, adapter: AdapterRef) -> Any:
    """A stream's SSE event under the model's name (the events are compact JSON, so one replace is exact)."""
    if isinstance(event, str):
        return event.replace(_model_field(adapter.name), _model_field(adapter.model))
    return event


def _model_field(name: str) -> str:
    return f'"model":{json.dumps(name)}'


class AdapterLoader:
    """Loads an adapter into its base's engine once its files check out, and gives back the handle whose release
    unloads it (Serve's multiplexer drops the least recently used one past the replica's bound)."""

    def __init__(self, host: AdapterHost, base_path: Path, max_rank: int) -> None:
        self._host, self._base_path, self._max_rank = host, base_path, max_rank
        self.loaded: set[str] = set()  # what the replica holds now

    async def load(self, adapter: AdapterRef) -> LoadedAdapter:
        local = Path(adapter.path).is_dir() and self._base_path.is_dir()  # hub ids: the engine checks them itself
        try:
            if local:
                check_adapter(adapter.name, Path(adapter.path), self._base_path, self._max_rank)
        except AdapterMismatch as exc:
            raise InvalidRequest(str(exc), param="model") from None
        try:
            await self._host.load_adapter(adapter.name, adapter.path)
        except OpenAIError:
            raise
        except Exception as exc:  # the engine's own failure on these files: the base serves on
            raise InvalidRequest(f"The adapter '{adapter.model}' could not be loaded: {exc}", param="model") from exc
        self.loaded.add(adapter.name)
        return LoadedAdapter(adapter.name, self, asyncio.get_running_loop())

    async def unload(self, name: str) -> None:
        self.loaded.discard(name)
        await self._host.unload_adapter(name)


class LoadedAdapter:
    """An adapter loaded on this replica. Serve's multiplexer calls `__del__` when it unloads the adapter (from a
    worker thread); the engine's unload then runs on the replica's event loop, once."""

    def __init__(self, name: str, loader: AdapterLoader, loop: asyncio.AbstractEventLoop) -> None:
        self.name, self._loader, self._loop = name, loader, loop
        self._released = False
        self.unloading: concurrent.futures.Future[None] | None = None

    def __del__(self) -> None:
        if self._released:
            return
        self._released = True
        if self._loop.is_closed():  # the replica is going away with its engine
            return
        self.unloading = asyncio.run_coroutine_threadsafe(self._loader.unload(self.name), self._loop)
