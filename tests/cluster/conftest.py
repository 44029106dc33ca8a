"""A Ray cluster of two nodes on this one host (`bench.cluster.LocalCluster`: Ray's own `ray.cluster_utils.Cluster`,
a raylet per node with its CPUs, its metrics port and Serve's HTTP proxy), and a tiny graph spread over both nodes.

It is a pytest session of its own (`pytest tests/cluster`, which `make test` runs after the main suite): the main
suite's session cluster is one node, and a process joins one Ray cluster only."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.config import GraphConfig, load_config
from bench.cluster import LocalCluster, Ports, spread_over
from tests.conftest import TEST_HTTP_PORT, TEST_METRICS_PORT
from tests.eventually import eventually
from tests.serve.conftest import tiny_chat_version, wait_ready
from tests.tiny_models import build_tiny_chat_model

PORTS = Ports(
    head_http=TEST_HTTP_PORT + 1000,
    worker_http=TEST_HTTP_PORT + 1001,
    head_metrics=TEST_METRICS_PORT + 1000,
    worker_metrics=TEST_METRICS_PORT + 1001,
)
NODE_CPUS = 2
APP_NAME = "cluster"
CHAT = "cl-chat"  # a stable and a canary version (in a rollout), each with one replica on each node
STABLE_DEPLOYMENT, CANARY_DEPLOYMENT = f"chat-{CHAT}-stable", f"chat-{CHAT}-canary"
BREAKER_THRESHOLD = 3
CANARY_STEPS = [20, 50, 100]


@dataclass(frozen=True)
class ClusterGraph:
    cluster: LocalCluster
    request_log: Path
    chat_model: Path  # the tiny model's folder


def cluster_config(chat: Path, request_log: Path) -> GraphConfig:
    def version(label: str, **extra: Any) -> dict[str, Any]:
        return tiny_chat_version(chat, label, max_output_tokens=200, **extra)

    return load_config(
        {
            "ingress": {"num_cpus": 0.1, "num_replicas": 2, "max_replicas_per_node": 1},
            "limits": {"request_timeout_s": 60},
            "observability": {"request_log_path": str(request_log)},
            "models": [
                {
                    "name": CHAT,
                    "role": "chat",
                    "default_version": "stable",
                    "versions": [
                        version(label, num_replicas=2, max_replicas_per_node=1) for label in ("stable", "canary")
                    ],
                    "rollout": {
                        "canary": "canary",
                        "steps": CANARY_STEPS,
                        "step_duration_s": 3600,  # the first step holds for the whole session
                        "gates": {"min_requests": 5, "max_error_rate": 0.1, "max_p99_ratio": 50},
                    },
                    "breaker": {"failure_threshold": BREAKER_THRESHOLD, "recovery_time_s": 600},
                    "retry": {"attempts": 3, "per_try_timeout_s": 30},
                }
            ],
            "routing": {"sync_interval_s": 0.2},
        }
    )


@pytest.fixture(scope="session")
def two_nodes() -> Iterator[LocalCluster]:
    import ray
    from ray import serve

    if ray.is_initialized():
        raise RuntimeError("tests/cluster needs a pytest session of its own: run `pytest tests/cluster` alone")
    cluster = LocalCluster(PORTS, head_cpus=NODE_CPUS, worker_cpus=NODE_CPUS)
    try:
        ray.init(address=cluster.address, log_to_driver=False)
        serve.start(proxy_location="EveryNode", http_options={"host": "127.0.0.1", "port": PORTS.head_http})
        yield cluster
    finally:
        if ray.is_initialized():
            serve.shutdown()
            ray.shutdown()
        cluster.shutdown()


@pytest.fixture(scope="session")
def cluster_graph(two_nodes: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterGraph]:
    """The tiny graph, spread: an ingress, a stable and a canary replica on each node."""
    from ray import serve

    from deployments.graph import bind_graph

    chat = build_tiny_chat_model(tmp_path_factory.mktemp("cluster-models") / "chat")
    log = tmp_path_factory.mktemp("cluster-log") / "requests.jsonl"
    serve.run(bind_graph(cluster_config(chat, log)), name=APP_NAME, route_prefix="/")
    wait_ready(two_nodes.head_url, timeout_s=240)
    try:
        yield ClusterGraph(two_nodes, log, chat)
    finally:
        serve.delete(APP_NAME)


def wait_spread(deployment: str, count: int, timeout_s: float = 180) -> dict[str, list[str]]:
    """Until `deployment` has one RUNNING replica on each of `count` live nodes; the replicas by node."""

    def spread() -> dict[str, list[str]]:
        where = spread_over(APP_NAME, deployment, count)
        assert where is not None, f"{deployment} not on {count} nodes yet"
        return where

    return eventually(spread, what=f"{deployment} on {count} nodes", timeout_s=timeout_s, interval_s=0.5)


def ask(base: str, content: str = "hello", **extra: Any) -> httpx.Response:
    body = {"model": CHAT, "messages": [{"role": "user", "content": content}], "max_tokens": 8, **extra}
    return httpx.post(f"{base}/v1/chat/completions", json=body, timeout=60)
