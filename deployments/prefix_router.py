"""Serve's request router for a chat version's replicas with prefix-cache affinity: the policy is
app/traffic/prefix_affinity.py, inside Serve's own routing loop (queueing, backoff and replica health stay
Serve's). It runs in the caller's process (the ingress) with its state in memory: no actor, no blocking call per
request. A request whose prompt cannot be read, or any error of the policy, is routed by load alone."""

from __future__ import annotations

import logging
import random
import time
from typing import Any

from ray.serve._private.replica_result import ReplicaResult
from ray.serve.request_router import PendingRequest, ReplicaID, RequestRouter, RunningReplica

from app.traffic.prefix_affinity import PrefixAffinity, prefix_keys, request_text
from deployments.metrics import GraphMetrics

logger = logging.getLogger("ray.serve")


class PrefixCacheRouter(RequestRouter):
    def initialize_state(  # type: ignore[override]
        self, block_chars: int, max_imbalance: int, ttl_s: float, max_entries: int
    ) -> None:
        self._block_chars = block_chars
        self._policy = PrefixAffinity(
            max_imbalance=max_imbalance, ttl_s=ttl_s, max_entries=max_entries, clock=time.monotonic, rng=random.Random()
        )
        self._metrics = GraphMetrics()
        self._name = self._deployment_id.name if self._deployment_id else ""

    async def choose_replicas(
        self, candidate_replicas: list[RunningReplica], pending_request: PendingRequest | None = None
    ) -> list[list[RunningReplica]]:
        try:
            keys = self._keys(pending_request)
            if not keys:
                self._metrics.prefix_route(self._name, "by-load")
                return [candidate_replicas]  # Serve takes the shortest queue among them
            by_id = {r.replica_id.unique_id: r for r in candidate_replicas}
            choice = self._policy.choose(keys, await self._loads(candidate_replicas))
            self._metrics.prefix_route(self._name, choice.reason)
            first, *rest = [by_id[r] for r in choice.ranked]
            return [[first], rest] if rest else [[first]]
        except Exception:
            logger.exception("prefix routing failed; routing by load")
            self._metrics.prefix_route(self._name, "error")
            return [candidate_replicas]

    def on_request_routed(
        self, pending_request: PendingRequest, replica_id: ReplicaID, result: ReplicaResult
    ) -> None:
        try:
            keys = self._keys(pending_request)
            if keys:
                self._policy.record(keys, replica_id.unique_id)
        except Exception:
            logger.exception("prefix routing could not record a routed request")

    def on_replica_actor_died(self, replica_id: ReplicaID) -> None:
        super().on_replica_actor_died(replica_id)
        self._policy.forget(replica_id.unique_id)

    def update_replicas(self, replicas: list[RunningReplica]) -> None:
        before = {r.unique_id for r in self._replica_id_set}
        super().update_replicas(replicas)
        for gone in before - {r.unique_id for r in self._replica_id_set}:
            self._policy.forget(gone)

    def _keys(self, pending_request: PendingRequest | None) -> list[bytes]:
        args: tuple[Any, ...] = tuple(pending_request.args) if pending_request is not None else ()
        text = request_text(args[0]) if args else None
        return prefix_keys(text, self._block_chars) if text else []

    async def _loads(self, replicas: list[RunningReplica]) -> dict[str, int]:
        """Requests in flight per replica: from Serve's queue-length cache, probing the replicas it lacks (a replica
        that does not answer counts as full)."""
        loads: dict[str, int] = {}
        missing: list[RunningReplica] = []
        for replica in replicas:
            known = self._replica_queue_len_cache.get(replica.replica_id)
            if known is None:
                missing.append(replica)
            else:
                loads[replica.replica_id.unique_id] = known
        if missing:
            for replica, queue_len in await self._probe_queue_lens(missing, 0):
                full = replica.max_ongoing_requests
                loads[replica.replica_id.unique_id] = full if queue_len is None else queue_len
        return loads
