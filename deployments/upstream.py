"""The ingress's one hop, over Serve's deployment handles: the `Upstream` that app/traffic/dispatch.py drives."""

from __future__ import annotations

import asyncio
from typing import Any

from ray.serve.handle import DeploymentHandle, DeploymentResponseGenerator

from app.errors import to_error_info
from app.observability.metering import Metered
from app.traffic.dispatch import Failure
from app.traffic.plan import Plan
from deployments.errors import lost_replica, translate

Handles = dict[str, dict[str, DeploymentHandle[Any]]]


class ServeUpstream:
    def __init__(self, handles: Handles, grpc: bool) -> None:
        self._handles = {
            model: {v: h.options(_by_reference=not grpc) for v, h in versions.items()}
            for model, versions in handles.items()
        }

    def handle(self, model: str, version: str) -> DeploymentHandle[Any]:
        return self._handles[model][version]

    async def call(self, plan: Plan, version: str) -> Metered[Any]:
        method = getattr(self._handles[plan.model.name][version], plan.endpoint.method)
        response = method.remote(plan.body)
        try:
            answer: Metered[Any] = await response
        except asyncio.CancelledError:  # the deadline passed or the client left: stop the replica's work too
            response.cancel()
            raise
        return answer

    def stream(self, plan: Plan, version: str) -> DeploymentResponseGenerator[Any]:
        handle = self._handles[plan.model.name][version].options(stream=True)
        generator: DeploymentResponseGenerator[Any] = handle.stream.remote(plan.body)  # type: ignore[assignment]
        return generator

    def failure(self, exc: Exception) -> Failure:
        return Failure(to_error_info(translate(exc)), lost_replica(exc))
