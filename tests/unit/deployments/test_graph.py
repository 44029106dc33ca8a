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


def test_max_replicas_per_node_reaches_serve() -> None:
    from deployments.graph import bind_ingress

    version = {"version": "v1", "engine": "transformers", "weights": {"path": str(ROOT)}, "num_cpus": 0.25}
    config = load_config(
        {
            "ingress": {"num_replicas": 2, "max_replicas_per_node": 1},
            "models": [
                {"name": "m", "role": "chat", "versions": [{**version, "num_replicas": 2, "max_replicas_per_node": 1}]},
                {"name": "n", "role": "chat", "versions": [version]},
            ],
        }
    )
    spread, free = (_deployment(m, m.versions[0])._replica_config for m in config.models)
    assert (spread.max_replicas_per_node, free.max_replicas_per_node) == (1, None)
    ingress = bind_ingress(config, {}, None)._bound_deployment
    assert ingress._replica_config.max_replicas_per_node == 1 and ingress.num_replicas == 2


def test_haproxy_that_would_cut_long_requests_is_refused() -> None:
    import pytest

    from app.config import ConfigError
    from app.haproxy import haproxy_env
    from deployments.graph import check_ingress_proxy

    (app,) = yaml.safe_load((ROOT / "serve_config.gpu.yaml").read_text())["applications"]
    config = load_config(app["args"])
    check_ingress_proxy(config, {})  # Serve's Python proxy
    check_ingress_proxy(config, haproxy_env(config.limits.request_timeout_s, 8))
    with pytest.raises(ConfigError, match="RAY_SERVE_HAPROXY_HARD_STOP_AFTER_S=120 is below"):
        check_ingress_proxy(config, {"RAY_SERVE_ENABLE_HA_PROXY": "1"})
