"""Will the graph fit? Packs every replica's CPU and GPU ask onto the cluster's nodes the way Ray's scheduler would
(fractions share a GPU, whole GPUs and tensor-parallel groups stay on one node), so a graph that cannot be placed is
reported with numbers at startup instead of leaving `serve run` waiting forever."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from app.config import GraphConfig, deployment_name


@dataclass(frozen=True)
class Ask:
    replica: str  # e.g. "embedding-bge-v1 #3"
    cpus: float
    gpus: float


@dataclass
class Node:
    cpus: float
    gpus: list[float]  # free share of each GPU


def asks(config: GraphConfig) -> list[Ask]:
    """What every replica that must exist at startup reserves (autoscaled versions: their min_replicas)."""
    out = [Ask(f"ingress #{i + 1}", config.ingress.num_cpus, 0.0) for i in range(config.ingress.num_replicas)]
    for model in config.models:
        for v in model.versions:
            count = v.autoscaling.min_replicas if v.autoscaling else v.num_replicas
            tp = v.vllm.tensor_parallel_size
            cpus = v.num_cpus + (tp if tp > 1 else 0)  # tensor-parallel workers take a CPU per GPU bundle
            out += [Ask(f"{deployment_name(model, v)} #{i + 1}", cpus, v.num_gpus) for i in range(count)]
    return out


def _place(ask: Ask, nodes: Sequence[Node]) -> bool:
    for node in nodes:
        if node.cpus + 1e-9 < ask.cpus:
            continue
        if ask.gpus == 0:
            node.cpus -= ask.cpus
            return True
        if ask.gpus < 1:
            # best fit: the fullest GPU that still takes the fraction, so fractions pack together
            fits = [i for i, free in enumerate(node.gpus) if free + 1e-9 >= ask.gpus]
            if fits:
                best = min(fits, key=lambda i: node.gpus[i])
                node.gpus[best] -= ask.gpus
                node.cpus -= ask.cpus
                return True
            continue
        whole = [i for i, free in enumerate(node.gpus) if free >= 1 - 1e-9]
        if len(whole) >= ask.gpus:
            for i in whole[: int(ask.gpus)]:
                node.gpus[i] = 0.0
            node.cpus -= ask.cpus
            return True
    return False


def unplaced(wanted: Sequence[Ask], nodes: Sequence[tuple[float, int]]) -> list[Ask]:
    """The asks that do not fit on nodes given as (cpus, gpus); the largest GPU asks are placed first."""
    free = [Node(cpus, [1.0] * gpus) for cpus, gpus in nodes]
    order = sorted(wanted, key=lambda a: (-a.gpus, -a.cpus))
    return [a for a in order if not _place(a, free)]


def report(missing: Sequence[Ask], nodes: Sequence[tuple[float, int]]) -> str:
    cluster = ", ".join(f"{c:g} CPU / {g} GPU" for c, g in nodes) or "no nodes"
    lines = [f"  {a.replica}: {a.cpus:g} CPU, {a.gpus:g} GPU" for a in missing]
    return (
        f"{len(missing)} replica(s) cannot be placed on this cluster ({cluster}):\n"
        + "\n".join(lines)
        + "\nLower num_cpus/num_gpus or replicas, add nodes, or set capacity_check: off where an autoscaler "
        "adds nodes later."
    )
