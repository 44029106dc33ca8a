"""build_app: validate the config, then bind every model version and the ingress into one application."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Mapping
from typing import Any

import ray
from ray.serve import Application
from ray.serve.deployment import Deployment

from app.config import (
    CapacityCheck,
    ConfigError,
    EngineKind,
    GraphConfig,
    ModelConfig,
    ModelVersion,
    Role,
    RouterPolicy,
    deployment_name,
    load_config,
)
from app.engines.vllm_chat import cpu_environment
from app.haproxy import hard_stop_problem
from app.placement import CONTROLLER_CPUS, Node, pack, replicas, report, tensor_parallel_bundles
from deployments.adapter_registry import AdapterRegistry
from deployments.chat_model import ChatModel
from deployments.encoder import Encoder
from deployments.ingress import Ingress
from deployments.rollout_controller import RolloutController

logger = logging.getLogger("ray.serve")
PREFIX_ROUTER = "deployments.prefix_router.PrefixCacheRouter"


def build_app(args: dict[str, Any]) -> Application:
    """The `import_path` target of serve_config.yaml; `args` is the graph config."""
    return bind_graph(load_config(args))


def bind_graph(config: GraphConfig) -> Application:
    check_capacity(config)
    check_ingress_proxy(config, os.environ)
    weights_dir = str(config.resolved_weights_dir())
    handles: dict[str, dict[str, Application]] = {}
    bound: dict[tuple[str, str], Application] = {}
    for model in config.models:
        for version in (v for v in model.versions if v.has_replicas):
            deployment = _deployment(model, version)
            if model.role is Role.CHAT:
                bound[model.name, version.version] = deployment.bind(model, version, weights_dir)
            else:
                bound[model.name, version.version] = deployment.bind(model, version, weights_dir, config.limits)
    for model in config.models:
        for version in model.versions:  # an adapter's calls go to its base's replicas
            base_model, base = config.base_of(model, version)
            handles.setdefault(model.name, {})[version.version] = bound[base_model.name, base.version]
    controller: Application | None = None
    actor = {"num_cpus": CONTROLLER_CPUS}
    # a new run id at each bind: a new `serve run`/`serve deploy` starts rollouts and run-time adapters afresh, while
    # a restart of the controller's or the registry's replica (the same init arguments) finds what it kept under it
    run_id = uuid.uuid4().hex
    if any(m.rollout is not None for m in config.models):
        controller = RolloutController.options(ray_actor_options=actor).bind(config, run_id)  # type: ignore[attr-defined]
    registry: Application | None = None
    if config.serves_adapters():
        registry = AdapterRegistry.options(ray_actor_options=actor).bind(run_id)  # type: ignore[attr-defined]
    return bind_ingress(config, handles, controller, registry)


def bind_ingress(
    config: GraphConfig, handles: dict[str, dict[str, Application]], controller: Any, registry: Any = None
) -> Application:
    """The ingress with its configured replicas and limits, bound over the model replicas."""
    ingress: Deployment = Ingress.options(  # type: ignore[attr-defined]
        num_replicas=config.ingress.num_replicas,
        max_ongoing_requests=config.ingress.max_ongoing_requests,
        max_replicas_per_node=config.ingress.max_replicas_per_node,
        ray_actor_options={"num_cpus": config.ingress.num_cpus},
    )
    app: Application = ingress.bind(config, handles, controller, registry)
    return app


def _deployment(model: ModelConfig, version: ModelVersion) -> Deployment:
    cls: Deployment = ChatModel if model.role is Role.CHAT else Encoder  # type: ignore[assignment]
    env = dict(version.env_vars)
    if version.engine is EngineKind.VLLM and version.num_gpus == 0:
        env = {**cpu_environment(version.vllm.kv_cache_space_gb), **env}
    actor_options: dict[str, Any] = {"num_cpus": version.num_cpus, "num_gpus": version.num_gpus}
    if version.accelerator_type:
        actor_options["accelerator_type"] = version.accelerator_type
    if env:
        actor_options["runtime_env"] = {"env_vars": env}
    options: dict[str, Any] = {
        "name": deployment_name(model, version),
        "max_ongoing_requests": version.max_ongoing_requests,
        "max_queued_requests": version.max_queued_requests,
        "user_config": {"batching": version.batching.model_dump()},
    }
    routing = version.request_router
    if routing.policy is RouterPolicy.PREFIX:
        options["request_router_config"] = {
            "request_router_class": PREFIX_ROUTER,
            "request_router_kwargs": routing.model_dump(exclude={"policy"}),
        }
    if version.max_replicas_per_node is not None:
        options["max_replicas_per_node"] = version.max_replicas_per_node
    if version.autoscaling is not None:
        options["autoscaling_config"] = version.autoscaling.model_dump()
    else:
        options["num_replicas"] = version.num_replicas
    bundles = tensor_parallel_bundles(version)
    if bundles:
        # The replica holds no GPU itself; vLLM's tensor-parallel workers take one bundle (one GPU) each.
        actor_options["num_gpus"] = 0
        options["placement_group_bundles"] = bundles
        options["placement_group_strategy"] = "STRICT_PACK"
    deployment: Deployment = cls.options(ray_actor_options=actor_options, **options)
    return deployment


def check_ingress_proxy(config: GraphConfig, env: Mapping[str, str]) -> None:
    """Refuse HAProxy settings (read by Ray from this process's environment, as on every node) under which its
    reloads would cut requests that the graph still lets run."""
    problem = hard_stop_problem(env, config.limits.request_timeout_s)
    if problem is not None:
        raise ConfigError(problem)


def check_capacity(config: GraphConfig) -> None:
    """Fail (or warn) at once when the replicas cannot all be placed, instead of a deploy that never finishes."""
    if config.capacity_check is CapacityCheck.OFF or not ray.is_initialized():
        return
    alive = [n for n in ray.nodes() if n["Alive"]]  # type: ignore[no-untyped-call]
    nodes = [Node(float(n["Resources"].get("CPU", 0)), int(n["Resources"].get("GPU", 0))) for n in alive]
    missing = pack(replicas(config), nodes)
    if not missing:
        return
    if config.capacity_check is CapacityCheck.FAIL:
        raise ConfigError(report(missing, nodes))
    logger.warning(report(missing, nodes))
