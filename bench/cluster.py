"""A Ray cluster of several nodes on this one host, for the tests and the bench: Ray's own
`ray.cluster_utils.Cluster` (a raylet per node, each with its CPUs and its metrics port), Serve's HTTP proxy on every
node (a worker node's on a port of its own: two proxies on one host need two), and a node killed the way a preempted
machine dies."""

from __future__ import annotations

import contextlib
import signal
from dataclasses import dataclass
from typing import Any

import psutil


@dataclass(frozen=True)
class Ports:
    head_http: int
    worker_http: int
    head_metrics: int
    worker_metrics: int


class LocalCluster:
    """A head and one worker node; `kill_worker` and `add_worker` lose it and bring one back."""

    def __init__(self, ports: Ports, *, head_cpus: float, worker_cpus: float) -> None:
        from ray.cluster_utils import Cluster

        self.ports = ports
        self._worker_cpus = worker_cpus
        self._cluster = Cluster(
            initialize_head=True,
            head_node_args={
                "num_cpus": head_cpus,
                "metrics_export_port": ports.head_metrics,
                "include_dashboard": False,
            },
        )
        self.worker: Any = None  # ray._private.node.Node
        self.add_worker()
        self._cluster.wait_for_nodes(timeout=60)

    @property
    def address(self) -> str:
        return str(self._cluster.address)

    @property
    def worker_id(self) -> str | None:
        """The worker node's Ray node id (None once it is killed)."""
        return None if self.worker is None else str(self.worker.node_id)

    @property
    def head_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.head_http}"

    @property
    def worker_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.worker_http}"

    def add_worker(self) -> None:
        """A fresh worker node, as KubeRay starts a pod in place of a lost one."""
        self.worker = self._cluster.add_node(
            num_cpus=self._worker_cpus,
            metrics_export_port=self.ports.worker_metrics,
            env_vars={"RAY_SERVE_WORKER_PROXY_HTTP_PORT": str(self.ports.worker_http)},
        )

    def kill_worker(self) -> None:
        """The worker node dies as a preempted machine does: its raylet and every process it started (replicas,
        proxy, agents) killed at once, none shut down."""
        node = self.worker
        raylet = psutil.Process(node.all_processes["raylet"][0].process.pid)
        for process in [*raylet.children(recursive=True), raylet]:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.send_signal(signal.SIGKILL)
        self._cluster.remove_node(node, allow_graceful=False)
        self.worker = None

    def shutdown(self) -> None:
        self._cluster.shutdown()


def alive_nodes() -> dict[str, str]:
    """node id -> 'head' or 'worker', for the nodes Ray takes to be alive (of the cluster this process joined)."""
    import ray

    return {
        n["NodeID"]: "head" if n.get("Resources", {}).get("node:__internal_head__") else "worker"
        for n in ray.nodes()  # type: ignore[no-untyped-call]
        if n["Alive"]
    }


def replicas_by_node(app: str, deployment: str) -> dict[str, list[str]]:
    """node id -> the RUNNING replicas (actor names) of one deployment of `app`, as Serve's controller has them."""
    from ray.serve.context import _get_global_client

    details = _get_global_client().get_serve_details()
    found: dict[str, list[str]] = {}
    for replica in details["applications"][app]["deployments"][deployment]["replicas"]:
        if replica["state"] == "RUNNING":
            found.setdefault(replica["node_id"], []).append(replica["actor_name"])
    return found


def spread_over(app: str, deployment: str, count: int) -> dict[str, list[str]] | None:
    """The replicas by node when `deployment` has exactly one RUNNING replica on each of `count` live nodes."""
    alive = alive_nodes()
    where = {n: r for n, r in replicas_by_node(app, deployment).items() if n in alive}
    return where if len(where) == count and all(len(r) == 1 for r in where.values()) else None
