"""AdapterRegistry: one replica, off the request path. Holds the adapters loaded at run time, which every ingress
replica pulls (`entries`) with its rollout sync, so a load on one ingress is served by all.

They outlive it: each one is kept in the GCS (deployments/run_store.py) before its load is acknowledged, so a replica
that Serve restarts (its actor killed, its node lost) holds them again, and the ingresses, which drop the adapters the
registry no longer lists, keep serving them."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import asdict

from ray import serve

from app.serving.adapter_admin import RuntimeAdapter
from deployments.run_store import RunStore

logger = logging.getLogger("ray.serve")


@serve.deployment(num_replicas=1, max_ongoing_requests=1000)
class AdapterRegistry:
    def __init__(self, run_id: str) -> None:
        """`run_id` names this deploy of the graph (deployments/graph.py). The kept adapters are read here, blocking,
        once: the replica answers no `entries` call before its constructor returns."""
        self._store = RunStore("adapters", serve.get_replica_context().app_name, run_id)
        kept = self._store.load()
        self._entries = {name: RuntimeAdapter(**fields) for name, fields in kept.items()}
        if not kept:
            try:
                self._store.forget_other_runs()
            except Exception as exc:  # leftovers only cost space; the next first start deletes them
                logger.warning("could not delete older runs' adapters: %s", exc)
        self._writing = asyncio.Lock()

    async def add(self, entry: RuntimeAdapter) -> bool:
        """False when the name is taken (by a load on another ingress)."""
        if entry.name in self._entries:
            return False
        self._entries[entry.name] = entry
        async with self._writing:
            await asyncio.to_thread(self._store.save, entry.name, asdict(entry))
        return True

    async def remove(self, name: str) -> bool:
        if self._entries.pop(name, None) is None:
            return False
        async with self._writing:
            await asyncio.to_thread(self._store.delete, name)
        return True

    def entries(self) -> list[RuntimeAdapter]:
        return list(self._entries.values())
