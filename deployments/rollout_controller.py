"""RolloutController: one replica, off the request path. Owns each model's Rollout; ingresses report outcomes to it
and pull the weights back (`sync`), so weights change with no redeploy.

Its rollouts outlive it: each one's snapshot is kept in the GCS (deployments/run_store.py) when its phase or step
moves or an admin action applies, and a replica that Serve restarts (its actor killed, its node lost) resumes every
rollout at its phase and step. While it is down, the ingresses keep routing with the last weights they got."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from ray import serve

from app.config import GraphConfig
from app.errors import ErrorInfo, InvalidRequest, ModelNotFound
from app.traffic.rollout import Action, InvalidTransition, Outcome, Phase
from app.traffic.rollout_book import RolloutBook
from deployments.metrics import GraphMetrics
from deployments.run_store import RunStore

PHASES = tuple(p.value for p in Phase)
logger = logging.getLogger("ray.serve")


@serve.deployment(num_replicas=1, max_ongoing_requests=1000)
class RolloutController:
    def __init__(self, config: GraphConfig, run_id: str) -> None:
        """`run_id` names this deploy of the graph (deployments/graph.py makes a new one at each bind). The snapshots
        are read here, blocking, once: the replica serves nothing before its constructor returns, so no sync ever
        gets weights from a rollout not yet restored, and one GCS read is a few milliseconds. When this run has
        none (its first start), the application's older runs' snapshots are deleted."""
        self._store = RunStore("rollouts", serve.get_replica_context().app_name, run_id)
        saved = self._store.load()
        if not saved:
            try:
                self._store.forget_other_runs()
            except Exception as exc:  # leftovers only cost space; the next first start deletes them
                logger.warning("could not delete older runs' rollout snapshots: %s", exc)
        # wall-clock time: the history's timestamps must mean the same on a replica restarted on another node
        self._book = RolloutBook(config, time.time, saved)
        for rollout in self._book.rollouts():
            if rollout.model in saved:
                logger.info("rollout of %s: %s", rollout.model, rollout.history[-1].reason)
        self._interval_s = config.routing.sync_interval_s
        self._ticker: asyncio.Task[None] | None = None
        self._writing = asyncio.Lock()
        self._metrics = GraphMetrics()
        self._report()

    def _report(self) -> None:
        for r in self._book.rollouts():
            self._metrics.rollout(r.model, r.canary, r.canary_weight, r.step, r.phase.value, PHASES)

    def _ensure_ticking(self) -> None:
        if self._ticker is None or self._ticker.done():
            self._ticker = asyncio.get_running_loop().create_task(self._tick_forever())

    async def _tick_forever(self) -> None:
        while True:
            self._book.tick()
            self._report()
            await self._keep()
            await asyncio.sleep(self._interval_s)

    async def _keep(self) -> None:
        """Write the snapshot of every rollout that changed, one write at a time (an older snapshot never lands
        after a newer one); a failed write is retried at the next tick."""
        async with self._writing:
            for model, snapshot in self._book.unsaved().items():
                try:
                    await asyncio.to_thread(self._store.save, model, snapshot)
                except Exception as exc:
                    logger.warning("could not keep the rollout snapshot of %s: %s", model, exc)
                    continue
                self._book.saved(model, snapshot)

    async def sync(self, outcomes: list[Outcome]) -> dict[str, dict[str, float]]:
        """Record an ingress's outcomes; return every rollout's current weights."""
        self._ensure_ticking()
        self._book.record(outcomes)
        return self._book.weights()

    async def states(self) -> list[dict[str, Any]]:
        self._ensure_ticking()
        return self._book.states()

    async def act(self, model: str, action: Action) -> dict[str, Any] | ErrorInfo:
        """Applies an admin action and keeps its snapshot before it answers."""
        if self._book.get(model) is None:
            return ModelNotFound(f"No rollout is configured for '{model}'.", param="name").info()
        try:
            rollout = self._book.act(model, action)
        except InvalidTransition as exc:
            return InvalidRequest(str(exc)).info().model_copy(update={"status": 409, "code": "invalid_transition"})
        self._report()
        await self._keep()
        return rollout.state()
