"""The ingress's one hop, over Serve's deployment handles: the `Upstream` that app/traffic/dispatch.py drives."""

from __future__ import annotations

import asyncio
from typing import Any

from ray.serve.handle import DeploymentHandle, DeploymentResponseGenerator

from app.errors import to_error_info
from app.observability.metering import Metered
from app.serving.adapters import AdapterRef
from app.traffic.dispatch import Failure
from app.traffic.plan import Plan
from deployments.errors import lost_replica, translate

Handles = dict[str, dict[str, DeploymentHandle[Any]]]


class ServeUpstream:
    """`adapters`: the versions that are LoRA adapters; their calls go to their base's replicas with the adapter's
    name as Serve's multiplexed model id (Serve routes them to a replica that holds it) and the adapter with them."""

    def __init__(self, handles: Handles, grpc: bool, adapters: dict[tuple[str, str], AdapterRef]) -> None:
        self._handles = {
            model: {v: h.options(_by_reference=not grpc) for v, h in versions.items()}
            for model, versions in handles.items()
        }
        self._adapters = adapters
        for (model, version), adapter in adapters.items():
            self._handles[model][version] = self._handles[model][version].options(multiplexed_model_id=adapter.name)

    def add_adapter(self, model: str, version: str, adapter: AdapterRef, base: tuple[str, str]) -> None:
        """Serve `model@version` as `adapter` on the replicas of the base (model, version)."""
        handle = self._handles[base[0]][base[1]].options(multiplexed_model_id=adapter.name)
        self._handles.setdefault(model, {})[version] = handle
        self._adapters[model, version] = adapter

    def remove_model(self, model: str) -> None:
        for version in self._handles.pop(model, {}):
            self._adapters.pop((model, version), None)

    def handle(self, model: str, version: str) -> DeploymentHandle[Any]:
        return self._handles[model][version]

    def _args(self, plan: Plan, version: str) -> tuple[Any, ...]:
        adapter = self._adapters.get((plan.model.name, version))
        return (plan.body,) if adapter is None else (plan.body, adapter)

    async def call(self, plan: Plan, version: str) -> Metered[Any]:
        method = getattr(self._handles[plan.model.name][version], plan.endpoint.method)
        response = method.remote(*self._args(plan, version))
        try:
            answer: Metered[Any] = await response
        except asyncio.CancelledError:  # the deadline passed or the client left: stop the replica's work too
            response.cancel()
            raise
        return answer

    def stream(self, plan: Plan, version: str) -> DeploymentResponseGenerator[Any]:
        handle = self._handles[plan.model.name][version].options(stream=True)
        generator: DeploymentResponseGenerator[Any] = handle.stream.remote(*self._args(plan, version))  # type: ignore[assignment]
        return generator

    def failure(self, exc: Exception) -> Failure:
        return Failure(to_error_info(translate(exc)), lost_replica(exc))
