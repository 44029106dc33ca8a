"""GPU pooling on a CPU host: the session cluster has two logical GPUs (tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.config import ConfigError, load_config
from tests.eventually import eventually

pytestmark = pytest.mark.timeout(300)


def pooled(embed_path: Path, replicas: int) -> dict[str, object]:
    version = {
        "version": "v1",
        "engine": "sentence-transformers",
        "weights": {"path": str(embed_path)},
        "device": "cpu",
        "num_cpus": 0.05,
        "num_gpus": 0.5,
        "num_replicas": replicas,
    }
    return {
        "ingress": {"num_cpus": 0.05},
        "models": [{"name": "pooled-embed", "role": "embedding", "versions": [version]}],
    }


def test_four_half_gpu_replicas_land_two_per_gpu(graph: str, tiny_paths: tuple[Path, Path]) -> None:
    from ray import serve

    from deployments.graph import bind_graph

    serve.run(bind_graph(load_config(pooled(tiny_paths[1], 4))), name="gpu-pool", route_prefix="/gpu-pool")
    try:
        handle = serve.get_deployment_handle("embedding-pooled-embed-v1", app_name="gpu-pool")
        seen: dict[str, list[str]] = {}

        def all_four_answered() -> None:
            where = handle.placement.remote().result(timeout_s=30)
            seen[where["replica"]] = where["gpu_ids"]
            assert len(seen) == 4, seen

        eventually(all_four_answered, what="each of the four replicas to report its GPU", timeout_s=60, interval_s=0)
        assert all(len(ids) == 1 for ids in seen.values())  # a fraction sits on one GPU
        per_gpu = sorted([ids[0] for ids in seen.values()].count(g) for g in {ids[0] for ids in seen.values()})
        assert per_gpu == [2, 2]
    finally:
        serve.delete("gpu-pool")


def test_a_fifth_replica_that_cannot_fit_is_reported_not_hung(graph: str, tiny_paths: tuple[Path, Path]) -> None:
    from deployments.graph import bind_graph

    with pytest.raises(ConfigError) as err:
        bind_graph(load_config(pooled(tiny_paths[1], 5)))
    message = str(err.value)
    assert "1 replica(s) cannot be placed" in message
    assert "embedding-pooled-embed-v1 #" in message and "0.5 GPU" in message and "2 GPU" in message
