"""What replicas ask of a node and how the asks pack: the one model behind the start-up capacity check, the KubeRay
worker groups and the graph's placement groups."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from app.config import ConfigError, GraphConfig, load_config
from app.placement import CONTROLLER_CPUS, Node, Replica, pack, replicas, report, tensor_parallel_bundles

ROOT = Path(__file__).resolve().parents[2]


def profile(name: str) -> GraphConfig:
    (app,) = yaml.safe_load((ROOT / name).read_text())["applications"]
    return load_config(app["args"])


def chat_version(version: str, **fields: object) -> dict[str, object]:
    return {"version": version, "engine": "transformers", "weights": {"path": str(ROOT)}, "num_cpus": 0.25, **fields}


def test_fractions_pack_two_per_gpu_and_a_fifth_is_reported() -> None:
    four = [Replica("e", 0.1, 0.5, number=i) for i in range(1, 5)]
    assert pack(four, [Node(4, 2)]) == []
    fifth = Replica("e", 0.1, 0.5, number=5)
    assert pack([*four, fifth], [Node(4, 2)]) == [fifth]
    text = report([fifth], [Node(4, 2)])
    assert "e #5: 0.1 CPU, 0.5 GPU" in text and "4 CPU / 2 GPU" in text
    third = Replica("third", 1, 0.4)
    assert pack([third] * 3, [Node(4, 1)]) == [third], "a replica's share sits on one GPU"


def test_fractions_fill_gpus_before_opening_new_ones() -> None:
    assert pack([Replica("a", 0, 0.75), Replica("b", 0, 0.25), Replica("c", 0, 1)], [Node(4, 2)]) == []
    half, quarter = Replica("half", 1, 0.5), Replica("quarter", 1, 0.25)
    assert pack([quarter] * 4 + [half] * 2, [Node(64, 2)]) == []


def test_whole_gpus_stay_on_one_node_and_go_first() -> None:
    tp4 = Replica("chat-72b", 2, 4)
    assert pack([tp4], [Node(16, 2), Node(16, 2)]) == [tp4]  # four GPUs, but never four on one node
    assert pack([tp4], [Node(16, 2), Node(16, 4)]) == []
    tp2, half = Replica("tp2", 4, 2), Replica("half", 1, 0.5)
    assert pack([tp2, tp2], [Node(64, 2)]) == [tp2]
    assert pack([half, tp2, half], [Node(64, 3)]) == [], "whole GPUs go to the tensor-parallel replica first"
    assert pack([half, half, half, tp2], [Node(64, 3)]) == [half]


def test_cpus_count_too() -> None:
    wanted = [Replica(f"r{i}", 1, 0) for i in range(3)]
    assert [r.deployment for r in pack(wanted, [Node(2, 0)])] == ["r2"]
    heavy = Replica("cpu-heavy", 40, 0.25)
    assert pack([heavy] * 2, [Node(64, 8)]) == [heavy]


def test_a_tensor_parallel_replica_asks_what_its_placement_group_holds() -> None:
    config = profile("serve_config.gpu.yaml")
    (model,) = [m for m in config.models if any(v.vllm.tensor_parallel_size == 4 for v in m.versions)]
    (version,) = model.versions
    bundles = tensor_parallel_bundles(version)
    assert bundles == [{"CPU": version.num_cpus, "accelerator_type:H100": 0.001}] + [{"GPU": 1, "CPU": 1}] * 4
    (replica,) = [r for r in replicas(config) if r.deployment == "chat-qwen2_5-72b-instruct-v1"]
    assert (replica.cpus, replica.gpus) == (sum(b.get("CPU", 0) for b in bundles), 4)
    assert replica.accelerator_type == "H100"
    single = next(v for m in config.models for v in m.versions if v.vllm.tensor_parallel_size == 1)
    assert tensor_parallel_bundles(single) == []


def test_replicas_at_their_fewest_and_most() -> None:
    config = load_config(
        {
            "ingress": {"num_replicas": 2},
            "models": [
                {
                    "name": "m",
                    "role": "chat",
                    "versions": [chat_version("v1", autoscaling={"min_replicas": 1, "max_replicas": 3})],
                }
            ],
        }
    )
    fewest = [r.name for r in replicas(config)]
    assert fewest == ["ingress #1", "ingress #2", "chat-m-v1 #1"]
    assert [r.name for r in replicas(config, at_max=True)][2:] == ["chat-m-v1 #1", "chat-m-v1 #2", "chat-m-v1 #3"]


def test_the_start_up_check_counts_the_rollout_controller(monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    from deployments.graph import check_capacity

    config = load_config(
        {
            "ingress": {"num_cpus": 0.5},
            "models": [
                {
                    "name": "m",
                    "role": "chat",
                    "versions": [chat_version("stable"), chat_version("canary")],
                    "rollout": {"canary": "canary"},
                }
            ],
        }
    )
    monkeypatch.setattr(ray, "is_initialized", lambda: True)

    def one_node(cpus: float) -> None:
        monkeypatch.setattr(ray, "nodes", lambda: [{"Alive": True, "Resources": {"CPU": cpus}}])

    one_node(1.0)  # what the ingress and both versions take; the controller's share is one more
    with pytest.raises(ConfigError, match=r"1 replica\(s\) cannot be placed(.|\n)*rollout-controller #1: 0\.05 CPU"):
        check_capacity(config)
    one_node(1.0 + CONTROLLER_CPUS)
    check_capacity(config)


def test_default_graph_fits_two_cores_and_the_gpu_profile_needs_gpus() -> None:
    assert pack(replicas(profile("serve_config.yaml")), [Node(2, 0)]) == []
    gpu = profile("serve_config.gpu.yaml")
    assert pack(replicas(gpu), [Node(2, 0)])  # a CPU host cannot take it
    assert pack(replicas(gpu), [Node(96, 8), Node(96, 8)]) == []


def test_max_replicas_per_node_spreads_a_deployment_over_nodes() -> None:
    spread = [Replica("chat", 0.5, 0, number=i, max_per_node=1) for i in (1, 2)]
    assert pack(spread, [Node(4, 0), Node(4, 0)]) == []
    nodes = [Node(4, 0), Node(4, 0)]
    pack(spread, nodes)
    assert [[r.name for r in n.held] for n in nodes] == [["chat #1"], ["chat #2"]]
    (third,) = pack([*spread, Replica("chat", 0.5, 0, number=3, max_per_node=1)], [Node(4, 0), Node(4, 0)])
    assert third.name == "chat #3"
    assert "chat #3: 0.5 CPU, 0 GPU, at most 1 per node" in report([third], [Node(4, 0), Node(4, 0)])
    others = [Replica("other", 0.5, 0, number=i) for i in (1, 2)]  # no limit: both on the first node
    first = Node(4, 0)
    assert pack(others, [first, Node(4, 0)]) == [] and len(first.held) == 2


def test_a_replica_that_fits_the_cluster_but_no_single_node_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    from deployments.graph import check_capacity

    config = load_config(
        {
            "ingress": {"num_cpus": 0.25, "num_replicas": 2, "max_replicas_per_node": 1},
            "models": [{"name": "m", "role": "chat", "versions": [chat_version("v1", num_cpus=1.5)]}],
        }
    )
    monkeypatch.setattr(ray, "is_initialized", lambda: True)

    def nodes(*cpus: float) -> None:
        monkeypatch.setattr(ray, "nodes", lambda: [{"Alive": True, "Resources": {"CPU": c}} for c in cpus])

    nodes(1.0, 1.0, 1.0)  # 3 CPUs in all, 2 asked: but the 1.5-CPU replica fits no node
    three = r"\(1 CPU / 0 GPU, 1 CPU / 0 GPU, 1 CPU / 0 GPU\)"
    with pytest.raises(ConfigError, match=three + r":\n  chat-m-v1 #1: 1\.5 CPU"):
        check_capacity(config)
    nodes(2.0)  # one node is enough for the chat replica, not for two ingress replicas kept apart
    with pytest.raises(ConfigError, match=r"ingress #\d: 0\.25 CPU, 0 GPU, at most 1 per node"):
        check_capacity(config)
    nodes(1.75, 0.25)
    check_capacity(config)


def test_max_replicas_per_node_is_not_for_tensor_parallel_versions() -> None:
    tp = {"version": "v1", "engine": "vllm", "weights": {"path": str(ROOT)}, "num_gpus": 2}
    tp["vllm"] = {"tensor_parallel_size": 2}
    with pytest.raises(ConfigError, match="max_replicas_per_node cannot be set on a tensor-parallel version"):
        load_config({"models": [{"name": "m", "role": "chat", "versions": [{**tp, "max_replicas_per_node": 1}]}]})
