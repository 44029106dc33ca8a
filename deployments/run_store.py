"""Where the graph's deployments off the request path (the RolloutController's rollouts, the AdapterRegistry's run-time
adapters) keep what they hold: Ray's GCS internal KV, which lives on the head node (Serve keeps its own checkpoints
there), so a replica that Serve restarts, on its node or another after its node was lost, finds it.

A key is `<kind>/<app>/<run id>/<name>`. The run id is made where the graph is bound (a new `serve run` or
`serve deploy` starts afresh), and the replica gets it as an init argument (a restart of the replica resumes). Every
call blocks on the GCS: a replica makes them off its event loop (`asyncio.to_thread`) once it serves.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Protocol
from urllib.parse import quote, unquote

from ray.experimental import internal_kv

logger = logging.getLogger("ray.serve")
NAMESPACE = "inference-graph"


class Kv(Protocol):
    def get(self, key: str) -> bytes | None: ...

    def put(self, key: str, value: bytes) -> None: ...

    def keys(self, prefix: str) -> list[str]: ...

    def delete(self, key: str) -> None: ...


class GcsKv:
    """Ray's GCS internal KV, in a namespace of the graph's own."""

    def get(self, key: str) -> bytes | None:
        value: bytes | None = internal_kv._internal_kv_get(key, namespace=NAMESPACE)
        return value

    def put(self, key: str, value: bytes) -> None:
        internal_kv._internal_kv_put(key, value, overwrite=True, namespace=NAMESPACE)

    def keys(self, prefix: str) -> list[str]:
        return [k.decode() for k in internal_kv._internal_kv_list(prefix, namespace=NAMESPACE)]

    def delete(self, key: str) -> None:
        internal_kv._internal_kv_del(key, namespace=NAMESPACE)


def _part(name: str) -> str:
    return quote(name, safe="")  # no "/" inside a part: an app's prefix is never another app's


class RunStore:
    """One run's JSON objects of one kind (`rollouts`, `adapters`), by name, for one Serve application."""

    def __init__(self, kind: str, app: str, run_id: str, kv: Kv | None = None) -> None:
        self._kv = kv or GcsKv()
        self._app = f"{_part(kind)}/{_part(app)}/"
        self._run = f"{self._app}{_part(run_id)}/"

    def load(self) -> dict[str, dict[str, Any]]:
        """This run's objects, by name; one that cannot be read is left out (its owner starts that one afresh)."""
        snapshots: dict[str, dict[str, Any]] = {}
        for key in self._kv.keys(self._run):
            raw = self._kv.get(key)
            if raw is None:
                continue
            try:
                snapshot = json.loads(raw)
            except ValueError:
                logger.warning("%s is not JSON; it is left out", key)
                continue
            if isinstance(snapshot, dict):
                snapshots[unquote(key[len(self._run) :])] = snapshot
        return snapshots

    def save(self, name: str, value: dict[str, Any]) -> None:
        self._kv.put(self._run + _part(name), json.dumps(value).encode())

    def delete(self, name: str) -> None:
        self._kv.delete(self._run + _part(name))

    def forget_other_runs(self) -> int:
        """Delete this kind's objects of this application's other runs (older deploys); returns how many."""
        stale = [k for k in self._kv.keys(self._app) if not k.startswith(self._run)]
        for key in stale:
            self._kv.delete(key)
        return len(stale)
