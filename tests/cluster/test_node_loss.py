"""A worker node lost under load: the node that holds one of the stable version's two replicas, one of the canary's
and an ingress is killed, raylet and every process on it, while 16 clients stream and call through the head's proxy.
No unary request is lost (the failed tries are retried on the surviving replicas), a cut stream ends with a clean
error, the stable version's breaker stays closed and the canary's rollout goes on (each lost replica counts once, and
not as a canary error), and when a node joins again Serve puts the lost replicas back on it."""

from __future__ import annotations

import asyncio
import time

import pytest

from app.observability import catalog
from bench.cluster import alive_nodes
from bench.node_loss import NodeLoss, chat_call, lose_worker
from tests.cluster.conftest import (
    CANARY_DEPLOYMENT,
    CHAT,
    PORTS,
    STABLE_DEPLOYMENT,
    ClusterGraph,
    ask,
    wait_spread,
)
from tests.cluster.test_spread import ok, scrape
from tests.eventually import HTTP_RETRIED, eventually
from tests.serve.conftest import rollout_state

pytestmark = pytest.mark.timeout(600)
REQUESTS = 300
HEAD_URL = f"http://127.0.0.1:{PORTS.head_http}"


def stable_breaker() -> float:
    states = scrape(PORTS.head_metrics)["ray_inference_graph_breaker_state"]
    (value,) = [v for labels, v in states if labels.get("model") == CHAT and labels.get("version") == "stable"]
    return value


def test_a_lost_node_loses_no_unary_request_and_is_replaced(
    cluster_graph: ClusterGraph, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster = cluster_graph.cluster
    spread = wait_spread(STABLE_DEPLOYMENT, 2)
    worker = next(n for n, role in alive_nodes().items() if role == "worker")
    assert worker in spread
    assert worker in wait_spread(CANARY_DEPLOYMENT, 2)
    before = rollout_state(cluster.head_url, CHAT)
    assert before["phase"] == "progressing" and before["step"] == 0, before

    try:
        load = lose_worker(cluster, chat_call(CHAT, 24), cluster_graph.request_log, requests=REQUESTS, timeout_s=300)
        loss = asyncio.run(load)
        check_what_the_clients_saw(loss, worker)
    finally:  # KubeRay starts a pod in place of the lost one (and the other tests find two nodes)
        joined = time.monotonic()
        if cluster.worker is None:
            cluster.add_worker()
    # Serve puts the missing stable replica and ingress on the new node
    wait_spread(STABLE_DEPLOYMENT, 2, timeout_s=240)
    replaced_s = time.monotonic() - joined

    wait_spread("Ingress", 2, timeout_s=120)
    wait_spread(CANARY_DEPLOYMENT, 2, timeout_s=120)
    response = eventually(
        lambda: ok(ask(cluster.worker_url)), what="the new node's proxy to answer", timeout_s=60, retry_on=HTTP_RETRIED
    )
    assert response.headers["x-served-by"] in (f"{CHAT}@stable", f"{CHAT}@canary")

    with capsys.disabled():
        print(
            f"\n  node loss: {len(loss.unary)} unary, none lost, {loss.retried} retried; "
            f"{len(loss.streams_cut)} of {len(loss.streams)} streams cut, each with a clean error; every request "
            f"served by the survivors at its first try {loss.settled_s:.1f} s after the kill; the lost replica back "
            f"{replaced_s:.1f} s after a node joined"
        )


def check_what_the_clients_saw(loss: NodeLoss, worker: str) -> None:
    """No unary request lost, cut streams ended cleanly, the breaker closed and the rollout where it was."""
    assert loss.left > 16, "the load was over before the node died"
    assert [s.index for s in loss.samples] == list(range(REQUESTS))  # every request got exactly one answer
    assert [(s.index, s.status, s.error) for s in loss.unary_lost] == []
    for s in loss.streams_cut:  # a clean error: an error event then [DONE] after the first byte, or a 503 before it
        clean_event = s.status == 200 and s.done and s.error is not None and "unavailable" in s.error
        assert clean_event or s.status == 503, s
    assert loss.retried > 0, "no request was in flight on the lost node"
    assert stable_breaker() == catalog.BREAKER_VALUES["closed"]
    after = rollout_state(HEAD_URL, CHAT)
    assert after["phase"] == "progressing" and after["step"] == 0, after["history"][-1]["reason"]
    # at most once: none when no canary request reached the lost replica, or when the controller was on the lost node
    # (its step's windows start again)
    assert after["reading"]["canary_replicas_lost"] in (0, 1)
