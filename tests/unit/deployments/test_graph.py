"""The graph's deployment options, built without a cluster: a tensor-parallel replica's placement group comes from
app/placement.py, so what Ray is asked for is what the capacity check and the KubeRay groups count."""

from __future__ import annotations

from pathlib import Path

import yaml

from app.config import load_config
from app.placement import replicas, tensor_parallel_bundles
from deployments.graph import _deployment

ROOT = Path(__file__).resolve().parents[3]


def test_tensor_parallel_replicas_reserve_their_placement_group() -> None:
    (app,) = yaml.safe_load((ROOT / "serve_config.gpu.yaml").read_text())["applications"]
    config = load_config(app["args"])
    asked = {r.deployment: r for r in replicas(config)}
    for model in config.models:
        for version in model.versions:
            deployment = _deployment(model, version)
            bundles = deployment._replica_config.placement_group_bundles
            actor = deployment.ray_actor_options or {}
            if version.vllm.tensor_parallel_size == 1:
                assert bundles is None and actor["num_gpus"] == version.num_gpus
                continue
            assert bundles == tensor_parallel_bundles(version)
            assert deployment._replica_config.placement_group_strategy == "STRICT_PACK"
            assert actor["num_gpus"] == 0, "the workers' bundles hold the GPUs"
            assert sum(b["CPU"] for b in bundles) == asked[deployment.name].cpus
            assert sum(b.get("GPU", 0) for b in bundles) == asked[deployment.name].gpus
