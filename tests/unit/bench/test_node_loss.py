import json
from pathlib import Path

from bench.load import Sample
from bench.node_loss import NodeLoss, spread_graph, started_at


def test_the_spread_graph_is_the_default_one_with_its_chat_version_one_per_node(tmp_path: Path) -> None:
    from app.config import load_config
    from app.placement import Node, pack, replicas

    graph = spread_graph(tmp_path / "requests.jsonl")
    config = load_config(graph.args)
    chat = config.model(graph.model)
    assert chat is not None and chat.rollout is not None and chat.rollout.canary == graph.canary
    stable = next(v for v in chat.versions if v.version == graph.stable)
    assert (stable.num_replicas, stable.max_replicas_per_node) == (2, 1)
    assert (config.ingress.num_replicas, config.ingress.max_replicas_per_node) == (2, 1)
    assert graph.stable_deployment == f"chat-{graph.model}-{graph.stable}"
    # the bench's nodes (3 and 2 CPUs) hold it, and one node alone cannot: the loss leaves a replica to place
    assert pack(replicas(config), [Node(3, 0), Node(2, 0)]) == []
    assert [r.deployment for r in pack(replicas(config), [Node(5, 0)])] == [graph.stable_deployment, "ingress"]


def test_what_the_clients_saw_is_split_into_unary_and_streams() -> None:
    samples = [
        Sample(i, 200 if i not in (3, 4) else 503, 0.1, error=None if i not in (3, 4) else "unavailable")
        for i in range(6)
    ]
    loss = NodeLoss(samples, killed_at=0.0, left=4, settled_s=0.0, retried=1)
    assert [s.index for s in loss.streams] == [0, 3] and [s.index for s in loss.unary] == [1, 2, 4, 5]
    assert [s.index for s in loss.streams_cut] == [3] and [s.index for s in loss.unary_lost] == [4]


def test_a_log_entry_started_its_latency_before_it_was_written() -> None:
    entry = json.loads('{"ts": "2026-01-01T00:00:10.000+00:00", "latency_ms": 2500}')
    assert started_at(entry) == 1767225607.5
