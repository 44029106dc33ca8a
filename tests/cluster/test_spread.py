"""The graph across two Ray nodes: replicas spread by max_replicas_per_node, an HTTP proxy and an ingress on each
node, each node's metrics on its own export port, and a start-up capacity check that counts nodes, not the total."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.config import ConfigError
from bench.cluster import alive_nodes
from tests.cluster.conftest import CHAT, PORTS, STABLE_DEPLOYMENT, ClusterGraph, ask, cluster_config, wait_spread
from tests.eventually import HTTP_RETRIED, eventually

pytestmark = pytest.mark.timeout(300)


def test_replicas_and_ingresses_spread_over_both_nodes(cluster_graph: ClusterGraph) -> None:
    nodes = alive_nodes()
    assert sorted(nodes.values()) == ["head", "worker"]
    assert set(wait_spread(STABLE_DEPLOYMENT, 2)) == set(nodes)
    assert set(wait_spread("Ingress", 2)) == set(nodes)


def test_each_nodes_proxy_serves_the_graph(cluster_graph: ClusterGraph) -> None:
    for base in (cluster_graph.cluster.head_url, cluster_graph.cluster.worker_url):
        response = eventually(
            lambda base=base: ok(ask(base)), what=f"{base} to answer", timeout_s=60, retry_on=HTTP_RETRIED
        )
        assert response.headers["x-served-by"] in (f"{CHAT}@stable", f"{CHAT}@canary")


def ok(response: httpx.Response) -> httpx.Response:
    assert response.status_code == 200, response.text[:200]
    return response


def scrape(port: int) -> dict[str, list[tuple[dict[str, str], float]]]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return {f.name: [(dict(s.labels), s.value) for s in f.samples] for f in text_string_to_metric_families(text)}


def test_each_node_exports_the_metrics_of_its_own_replicas(cluster_graph: ClusterGraph) -> None:
    for _ in range(6):
        assert ask(cluster_graph.cluster.head_url).status_code == 200
        assert ask(cluster_graph.cluster.worker_url).status_code == 200

    def both_ports() -> None:
        for port in (PORTS.head_metrics, PORTS.worker_metrics):
            families = scrape(port)
            served = families["ray_inference_graph_requests"]
            assert any(labels.get("model") == CHAT and value > 0 for labels, value in served), port
            # the stable replica on this node reports its model's load
            loaded = families["ray_inference_graph_model_load_seconds"]
            assert any(labels.get("version") == "stable" and value > 0 for labels, value in loaded), port

    what = "graph metrics on both nodes' ports"
    eventually(both_ports, what=what, timeout_s=90, interval_s=2, retry_on=(*HTTP_RETRIED, KeyError))


def test_the_capacity_check_counts_nodes_not_the_total(cluster_graph: ClusterGraph) -> None:
    from deployments.graph import check_capacity

    config = cluster_config(cluster_graph.chat_model, cluster_graph.request_log)
    (model,) = config.models
    # three CPUs fit the cluster's total of four, but no node has three
    wide = model.model_copy(update={"versions": [model.versions[0].model_copy(update={"num_cpus": 3.0})]})
    with pytest.raises(ConfigError, match=r"on this cluster \(2 CPU / 0 GPU, 2 CPU / 0 GPU\)(.|\n)*: 3 CPU"):
        check_capacity(config.model_copy(update={"models": [wide]}))
    check_capacity(config)
