"""Where replicas go: what each replica of the graph takes from a node, and how those asks pack onto nodes the way
Ray's scheduler places them (fractions share a GPU, whole GPUs and tensor-parallel groups stay on one node).

The start-up capacity check and the graph's placement groups (`deployments/graph.py`) and the sizing of KubeRay's
GPU worker groups (`app/kuberay`) all read it, so what the graph reserves is what both count.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from app.config import GraphConfig, ModelConfig, ModelVersion, deployment_name

CONTROLLER_CPUS = 0.05  # the RolloutController's actor: it steps rollouts and holds no model
WORKER_CPUS = 1  # each tensor-parallel worker of vLLM: a CPU beside its GPU
ACCELERATOR_SHARE = 0.001  # a resource Ray gives a node of the type; asking a sliver of it pins a replica there
_EPS = 1e-9


@dataclass(frozen=True)
class Replica:
    """What one Serve replica takes from a node; all of it on the same node."""

    deployment: str
    cpus: float
    gpus: float
    accelerator_type: str | None = None
    number: int = 1  # which replica of its deployment, from 1
    max_per_node: int | None = None  # most replicas of its deployment on one node

    @property
    def name(self) -> str:
        return f"{self.deployment} #{self.number}"

    @property
    def ask(self) -> str:
        per_node = f", at most {self.max_per_node} per node" if self.max_per_node is not None else ""
        return f"{self.cpus:g} CPU, {self.gpus:g} GPU{per_node}"


def tensor_parallel_bundles(version: ModelVersion) -> list[dict[str, float]]:
    """The placement group of a tensor-parallel replica, packed STRICT_PACK onto one node: the replica's own CPUs
    first, then one GPU and one CPU for each of vLLM's workers. Empty for a replica that is not tensor-parallel."""
    tp = version.vllm.tensor_parallel_size
    if tp == 1:
        return []
    first: dict[str, float] = {"CPU": version.num_cpus}
    if version.accelerator_type:  # the replica actor asks for it, so its bundle must hold it
        first[f"accelerator_type:{version.accelerator_type}"] = ACCELERATOR_SHARE
    return [first] + [{"GPU": 1, "CPU": WORKER_CPUS} for _ in range(tp)]


def version_replica(model: ModelConfig, version: ModelVersion, number: int = 1) -> Replica:
    """One replica of a model version; a tensor-parallel one takes its whole placement group's CPUs."""
    tp = version.vllm.tensor_parallel_size
    cpus = version.num_cpus + tp * WORKER_CPUS if tp > 1 else version.num_cpus
    name = deployment_name(model, version)
    return Replica(name, cpus, version.num_gpus, version.accelerator_type, number, version.max_replicas_per_node)


def replicas(config: GraphConfig, *, at_max: bool = False) -> list[Replica]:
    """Every replica of the graph at its fewest (an autoscaled version's min_replicas) or most (max_replicas)."""
    ingress = config.ingress
    out = [
        Replica("ingress", ingress.num_cpus, 0.0, None, i + 1, ingress.max_replicas_per_node)
        for i in range(ingress.num_replicas)
    ]
    if any(m.rollout is not None for m in config.models):
        out.append(Replica("rollout-controller", CONTROLLER_CPUS, 0.0))
    if config.serves_adapters():
        out.append(Replica("adapter-registry", CONTROLLER_CPUS, 0.0))
    for model in config.models:
        for version in (v for v in model.versions if v.has_replicas):
            fewest = version.autoscaling.min_replicas if version.autoscaling else version.num_replicas
            count = version.max_replicas if at_max else fewest
            out += [version_replica(model, version, i + 1) for i in range(count)]
    return out


@dataclass
class Node:
    """A Ray node (or a KubeRay pod that takes a whole node) and what has been packed onto it."""

    cpus: float
    gpus: int
    held: list[Replica] = field(default_factory=list, init=False)
    free_cpus: float = field(init=False)
    free_gpus: list[float] = field(init=False)  # the free share of each GPU

    def __post_init__(self) -> None:
        self.free_cpus = self.cpus
        self.free_gpus = [1.0] * self.gpus

    def take(self, replica: Replica) -> bool:
        if replica.cpus > self.free_cpus + _EPS:
            return False
        if replica.max_per_node is not None:
            siblings = sum(1 for r in self.held if r.deployment == replica.deployment)
            if siblings >= replica.max_per_node:
                return False
        if replica.gpus >= 1:
            idle = [i for i, free in enumerate(self.free_gpus) if free >= 1 - _EPS]
            if len(idle) < int(replica.gpus):
                return False
            for i in idle[: int(replica.gpus)]:
                self.free_gpus[i] = 0.0
        elif replica.gpus > 0:
            fits = [i for i, free in enumerate(self.free_gpus) if free >= replica.gpus - _EPS]
            if not fits:
                return False
            fullest = min(fits, key=lambda i: self.free_gpus[i])  # keeps whole GPUs for tensor-parallel replicas
            self.free_gpus[fullest] -= replica.gpus
        self.free_cpus -= replica.cpus
        self.held.append(replica)
        return True


def pack(wanted: Iterable[Replica], nodes: Sequence[Node]) -> list[Replica]:
    """Places the largest GPU asks first, each on the first node that takes it; returns what no node takes."""
    order = sorted(wanted, key=lambda r: (r.gpus, r.cpus), reverse=True)
    return [r for r in order if not any(node.take(r) for node in nodes)]


def report(missing: Sequence[Replica], nodes: Sequence[Node]) -> str:
    cluster = ", ".join(f"{n.cpus:g} CPU / {n.gpus} GPU" for n in nodes) or "no nodes"
    lines = [f"  {r.name}: {r.ask}" for r in missing]
    return (
        f"{len(missing)} replica(s) cannot be placed on this cluster ({cluster}):\n"
        + "\n".join(lines)
        + "\nLower num_cpus/num_gpus or replicas, add nodes, or set capacity_check: off where an autoscaler "
        "adds nodes later."
    )
