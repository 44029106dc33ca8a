"""GPU worker groups: sized by packing the replicas (app/placement.py), and checked against the committed manifests
by our own count and by Ray's autoscaler code."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from app.kuberay.groups import GpuPool, PlanError, plan, pods_needed
from app.kuberay.options import RenderOptions
from app.kuberay.profile import load_profile
from app.placement import ACCELERATOR_SHARE, Replica, tensor_parallel_bundles
from tests.unit.kuberay.committed import GPU, GPU_PROFILE, cluster, graph, manifests, quantity


def test_gpu_arithmetic_adds_up_for_each_worker_group() -> None:
    config = graph()
    groups = cluster()["workerGroupSpecs"]
    types = [next(iter(json.loads(json.loads(g["rayStartParams"]["resources"])))).split(":")[1] for g in groups]
    for group, accelerator in zip(groups, types, strict=True):
        (ray,) = group["template"]["spec"]["containers"]
        gpus_per_pod, cpus_per_pod = int(ray["resources"]["limits"][GPU]), quantity(ray["resources"]["limits"]["cpu"])
        versions = [
            v
            for m in config.models
            for v in m.versions
            if v.accelerator_type == accelerator or (v.accelerator_type is None and group is groups[0])
        ]
        assert any(v.num_gpus > 0 for v in versions)
        for v in versions:
            assert v.num_gpus <= gpus_per_pod, f"{v.version}: {v.num_gpus} GPUs must sit on one node"
        whole = sum(v.max_replicas * v.num_gpus for v in versions if v.num_gpus >= 1)
        fractional = sum(v.max_replicas * v.num_gpus for v in versions if v.num_gpus < 1)
        assert whole + math.ceil(fractional) <= group["maxReplicas"] * gpus_per_pod
        cpus = sum(v.max_replicas * (v.num_cpus + (v.num_gpus if v.num_gpus > 1 else 0)) for v in versions)
        cpus += config.ingress.num_replicas * config.ingress.num_cpus if group is groups[0] else 0
        assert cpus <= group["maxReplicas"] * cpus_per_pod
    assert {v.accelerator_type for m in config.models for v in m.versions} - {None} <= set(types)
    (quota,) = manifests()["resourcequota.yaml"]
    surge = 2 * sum(
        g["maxReplicas"] * int(g["template"]["spec"]["containers"][0]["resources"]["limits"][GPU]) for g in groups
    )
    assert int(quota["spec"]["hard"][f"requests.{GPU}"]) >= surge, "NewCluster runs two clusters during an upgrade"


def test_the_gpu_profile_plan() -> None:
    (group,) = plan(load_profile(GPU_PROFILE).graph, RenderOptions().gpu_pools)
    # at most: 72B on 4 GPUs, 2 x 32B on 2 each, 4.5 GPUs of 7B shares, 1 GPU of encoders: 12 of 16 GPUs
    assert (group.min_pods, group.max_pods) == (1, 2)
    assert "chat-qwen2_5-72b-instruct-v1" in group.deployments


def pool(gpus: int, cpus: int = 64) -> GpuPool:
    return GpuPool("X", "NVIDIA-X", gpus_per_pod=gpus, cpus_per_pod=cpus)


def test_pods_are_opened_as_the_packed_ones_fill() -> None:
    half, tp2 = Replica("half", cpus=1, gpus=0.5), Replica("tp2", cpus=4, gpus=2)
    assert pods_needed([], pool(1)) == 0
    assert pods_needed([half] * 2, pool(1)) == 1
    assert pods_needed([half] * 3, pool(1)) == 2
    assert pods_needed([half, half, half, tp2], pool(3)) == 2
    assert pods_needed([Replica("cpu-heavy", cpus=40, gpus=0.25)] * 2, pool(8, cpus=64)) == 2
    spread = [Replica("chat", cpus=1, gpus=0.25, number=i, max_per_node=1) for i in (1, 2, 3)]
    assert pods_needed(spread, pool(8)) == 3, "max_replicas_per_node: one pod each, as the capacity check counts"


def test_a_replica_larger_than_a_pod_is_named() -> None:
    with pytest.raises(PlanError, match="tp4 needs 4 GPUs and 6 CPUs on one node, but a gpu-x pod has 2 GPUs"):
        pods_needed([Replica("tp4", cpus=6, gpus=4)], pool(2))
    with pytest.raises(PlanError, match=r"cpu-heavy needs 0\.25 GPUs and 80 CPUs"):
        pods_needed([Replica("cpu-heavy", cpus=80, gpus=0.25)], pool(8, cpus=64))
    with pytest.raises(PlanError, match="qwen2_5-72b"):
        plan(load_profile(GPU_PROFILE).graph, [GpuPool("H100", "NVIDIA-H100", gpus_per_pod=2)])


def test_replicas_go_to_their_accelerators_pool() -> None:
    config = load_profile(GPU_PROFILE).graph
    with pytest.raises(PlanError, match="wants accelerator H100"):
        plan(config, [GpuPool("L4", "NVIDIA-L4")])
    groups = plan(config, [GpuPool("L4", "NVIDIA-L4", gpus_per_pod=4), GpuPool("H100", "NVIDIA-H100-80GB-HBM3")])
    l4, h100 = groups
    assert "embedding-bge-large-en-v1_5-v1" in l4.deployments and "ingress" in l4.deployments
    assert all(name.startswith("chat-") for name in h100.deployments)


def test_rays_own_autoscaler_reads_the_groups_and_packs_the_replicas() -> None:
    """Ray's KubeRay autoscaler code (Ray is pinned at 2.60.0; no cluster is started) derives the node types from the
    RayCluster spec and bin-packs the replicas' resource demands onto them."""
    from ray.autoscaler._private.kuberay.autoscaling_config import _derive_autoscaling_config_from_ray_cr
    from ray.autoscaler._private.resource_demand_scheduler import get_bin_pack_residual

    ray_cluster = {"apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": {"name": "c", "namespace": "n"}}
    types = _derive_autoscaling_config_from_ray_cr({**ray_cluster, "spec": cluster()})["available_node_types"]
    assert types["headgroup"]["resources"]["CPU"] == 0 and types["headgroup"]["resources"]["GPU"] == 0
    (group,) = cluster()["workerGroupSpecs"]
    node = types[group["groupName"]]
    assert node["resources"]["GPU"] == 8 and node["resources"]["accelerator_type:H100"] == 1

    config = graph()
    demands: dict[bool, list[dict[str, Any]]] = {}
    for at_max in (False, True):
        demands[at_max] = [{"CPU": config.ingress.num_cpus}] * config.ingress.num_replicas
        for v in (v for m in config.models for v in m.versions):
            # what the graph asks Ray for; a STRICT_PACK placement group is one combined demand
            pinned = {f"accelerator_type:{v.accelerator_type}": ACCELERATOR_SHARE} if v.accelerator_type else {}
            bundles = tensor_parallel_bundles(v) or [{"CPU": v.num_cpus, "GPU": v.num_gpus, **pinned}]
            demand = {key: sum(b.get(key, 0) for b in bundles) for key in {k for b in bundles for k in b}}
            low = v.autoscaling.min_replicas if v.autoscaling else v.num_replicas
            demands[at_max] += [demand] * (v.max_replicas if at_max else low)

    def unplaced(nodes: int, at_max: bool) -> int:
        residual, _ = get_bin_pack_residual([dict(node["resources"]) for _ in range(nodes)], demands[at_max])
        return len(residual)

    assert unplaced(node["max_workers"], at_max=True) == 0
    assert unplaced(node["min_workers"], at_max=False) == 0
    assert unplaced(node["max_workers"] - 1, at_max=True) > 0, "maxReplicas is not larger than it needs to be"
