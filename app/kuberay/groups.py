"""The GPU worker groups and how many pods each needs.

Every replica, the ingress included, runs on the GPU worker groups, one group per accelerator type. `plan` sizes
each group by packing the replicas first-fit-decreasing (`app/placement.py`, as the start-up capacity check does):
a tensor-parallel replica takes all its GPUs (and its placement group's CPUs) on one pod, fractional replicas share
single GPUs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from app.config import GraphConfig
from app.placement import Node, Replica, pack, replicas


class PlanError(ValueError):
    """Replicas that do not fit the GPU worker groups."""


@dataclass(frozen=True)
class GpuPool:
    """One GPU worker group: pods on nodes of one accelerator type, each pod taking a whole node."""

    accelerator_type: str  # Ray's name, as in a version's accelerator_type (H100)
    gpu_product: str  # the node label value GPU feature discovery sets (nvidia.com/gpu.product)
    gpus_per_pod: int = 8
    cpus_per_pod: int = 96
    memory_per_pod: str = "960Gi"

    @property
    def group_name(self) -> str:
        return f"gpu-{self.accelerator_type.lower()}"


@dataclass(frozen=True)
class GroupPlan:
    pool: GpuPool
    min_pods: int
    max_pods: int
    deployments: tuple[str, ...]


def pods_needed(demand: Sequence[Replica], pool: GpuPool) -> int:
    """Pods of `pool` that hold `demand`, packed first-fit-decreasing (a sufficient count, not always the least)."""
    # One empty pod per replica: first-fit fills them in order, so the pods it opens are the count.
    pods = [Node(float(pool.cpus_per_pod), pool.gpus_per_pod) for _ in demand]
    too_large = pack(demand, pods)
    if too_large:
        replica = too_large[0]
        raise PlanError(
            f"{replica.deployment} needs {replica.gpus:g} GPUs and {replica.cpus:g} CPUs on one node, but a "
            f"{pool.group_name} pod has {pool.gpus_per_pod} GPUs and {pool.cpus_per_pod} CPUs"
        )
    return sum(1 for pod in pods if pod.held)


def plan(config: GraphConfig, pools: Sequence[GpuPool]) -> list[GroupPlan]:
    """Worker groups sized for the graph. A replica with an accelerator type goes to that type's pool, one without
    (the ingress, say) to the first pool. Pools that nothing needs are left out."""
    if not pools:
        raise PlanError("no GPU pool to place replicas on")

    def pool_of(replica: Replica) -> GpuPool:
        if replica.accelerator_type is None:
            return pools[0]
        pool = next((p for p in pools if p.accelerator_type == replica.accelerator_type), None)
        if pool is None:
            raise PlanError(f"{replica.deployment} wants accelerator {replica.accelerator_type}: no pool has it")
        return pool

    groups = []
    for pool in pools:
        low = [r for r in replicas(config, at_max=False) if pool_of(r) == pool]
        high = [r for r in replicas(config, at_max=True) if pool_of(r) == pool]
        if high:
            names = tuple(dict.fromkeys(r.deployment for r in high))
            groups.append(GroupPlan(pool, pods_needed(low, pool), pods_needed(high, pool), names))
    return groups
