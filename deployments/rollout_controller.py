"""RolloutController: one replica, off the request path. Owns each model's Rollout; ingresses report outcomes to it
and pull the weights back (`sync`), so weights change with no redeploy."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from ray import serve

from app.config import GraphConfig
from app.errors import ErrorInfo, InvalidRequest, ModelNotFound
from app.traffic.rollout import Action, InvalidTransition, Outcome, Phase, Rollout
from deployments.metrics import GraphMetrics

PHASES = tuple(p.value for p in Phase)


@serve.deployment(num_replicas=1, max_ongoing_requests=1000)
class RolloutController:
    def __init__(self, config: GraphConfig) -> None:
        self._rollouts = {
            m.name: Rollout(m.name, m.stable_version, m.rollout, time.monotonic)
            for m in config.models
            if m.rollout is not None
        }
        self._interval_s = config.routing.sync_interval_s
        self._ticker: asyncio.Task[None] | None = None
        self._metrics = GraphMetrics()
        self._report()

    def _report(self) -> None:
        for r in self._rollouts.values():
            self._metrics.rollout(r.model, r.canary, r.canary_weight, r.step, r.phase.value, PHASES)

    def _ensure_ticking(self) -> None:
        if self._ticker is None or self._ticker.done():
            self._ticker = asyncio.get_running_loop().create_task(self._tick_forever())

    async def _tick_forever(self) -> None:
        while True:
            for rollout in self._rollouts.values():
                rollout.tick()
            self._report()
            await asyncio.sleep(self._interval_s)

    async def sync(self, outcomes: list[Outcome]) -> dict[str, dict[str, float]]:
        """Record an ingress's outcomes; return every rollout's current weights."""
        self._ensure_ticking()
        for outcome in outcomes:
            rollout = self._rollouts.get(outcome.model)
            if rollout is not None:
                rollout.record(outcome)
        return {name: r.weights() for name, r in self._rollouts.items()}

    async def states(self) -> list[dict[str, Any]]:
        self._ensure_ticking()
        return [r.state() for r in self._rollouts.values()]

    async def act(self, model: str, action: Action) -> dict[str, Any] | ErrorInfo:
        rollout = self._rollouts.get(model)
        if rollout is None:
            return ModelNotFound(f"No rollout is configured for '{model}'.", param="name").info()
        try:
            rollout.act(action)
        except InvalidTransition as exc:
            return InvalidRequest(str(exc)).info().model_copy(update={"status": 409, "code": "invalid_transition"})
        self._report()
        return rollout.state()
