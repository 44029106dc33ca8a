"""The applications the benchmarks serve. Each is built from the default config where it can be, so the figures
describe the product's defaults; the no-op graph binds the product's Ingress to bench replicas."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from ray.serve import Application
from ray.serve.deployment import Deployment

from app.config import GraphConfig, deployment_name, load_config
from bench.noop import NoopChat

ROOT = Path(__file__).resolve().parents[1]
CHAT_MODEL = "smollm2-135m-instruct"
EMBED_MODEL = "all-minilm-l6-v2"
NOOP_MODEL = "noop"
BATCHED, UNBATCHED = "minilm-batched", "minilm-unbatched"
CANARY_SHARES = (1.0, 10.0, 50.0)  # configured canary weights, one no-op model each


def canary_model(share: float) -> str:
    return f"noop-canary-{share:g}".replace(".", "_")


def default_args() -> dict[str, Any]:
    (app,) = yaml.safe_load((ROOT / "serve_config.yaml").read_text())["applications"]
    return dict(app["args"])


def default_logging_config() -> dict[str, Any]:
    """The default config's Serve logging (its access log off), for the bench graphs' applications."""
    config: dict[str, Any] = yaml.safe_load((ROOT / "serve_config.yaml").read_text()).get("logging_config") or {}
    return config


def _default_model(name: str) -> dict[str, Any]:
    return next(dict(m) for m in default_args()["models"] if m["name"] == name)


def chat_args() -> dict[str, Any]:
    """The default config's stable chat version (vLLM) alone: no canary, no encoders, the default ingress."""
    args, model = default_args(), _default_model(CHAT_MODEL)
    stable = model.get("default_version") or model["versions"][0]["version"]
    model["versions"] = [v for v in model["versions"] if v["version"] == stable]
    model.pop("weights", None)
    model.pop("default_version", None)
    return {"ingress": args.get("ingress", {}), "limits": args.get("limits", {}), "models": [model]}


PREFIX_GRAPHS = {  # bench graph name -> (replicas of the chat version, its request router policy)
    "prefix-one": (1, "pow2"),
    "prefix-pow2": (2, "pow2"),
    "prefix-prefix": (2, "prefix"),
}


def prefix_args(name: str) -> dict[str, Any]:
    """The default config's stable chat version with the replicas and router of a prefix-routing bench graph."""
    replicas, policy = PREFIX_GRAPHS[name]
    args = chat_args()
    (model,) = args["models"]
    (version,) = model["versions"]
    model["versions"] = [{**version, "num_replicas": replicas, "request_router": {"policy": policy}}]
    return args


STREAM_INTERVALS = {"chat-stream-1": 1, "chat-stream-4": 4, "chat-stream-8": 8}  # bench graph -> vllm.stream_interval


def stream_interval_args(name: str) -> dict[str, Any]:
    """The default config's stable chat version with the stream interval of a stream-interval bench graph."""
    args = chat_args()
    (model,) = args["models"]
    (version,) = model["versions"]
    vllm = {**version.get("vllm", {}), "stream_interval": STREAM_INTERVALS[name]}
    model["versions"] = [{**version, "vllm": vllm}]
    return args


LORA_GRAPHS = ("chat-lora-off", "chat-lora-on")  # the stable chat version as configured, and with LoRA on
LORA_COPY = "smollm2-lora-a2"  # a third adapter model on the first adapter's files: vLLM loads it as a LoRA of its own


def lora_args(name: str) -> dict[str, Any]:
    """The default config's stable chat version as configured, LoRA off (chat-lora-off), or with the `lora` of the
    default config's LoRA host version, the default config's adapter models on it and a third adapter model,
    LORA_COPY, on the first one's weights (chat-lora-on)."""
    if name not in LORA_GRAPHS:
        raise ValueError(f"unknown LoRA bench graph {name!r}")
    args = chat_args()
    (model,) = args["models"]
    (version,) = model["versions"]
    if name == "chat-lora-off":
        return args
    host, lora, adapters = _lora_host()
    model["versions"] = [{**version, "lora": lora}]
    base = f"{model['name']}/{version['version']}"
    rebased = [_rebased(m, host, base) for m in adapters]
    args["models"] = [model, *rebased, {**rebased[0], "name": LORA_COPY}]
    return args


def _lora_host() -> tuple[str, dict[str, Any], list[dict[str, Any]]]:
    """The default config's LoRA host ("model/version"), its `lora`, and the adapter models on it, in config order."""
    model = _default_model(CHAT_MODEL)
    version = next(v for v in model["versions"] if "lora" in v)
    host = f"{model['name']}/{version['version']}"
    found = [
        m for m in default_args()["models"] if any(v.get("adapter", {}).get("base") == host for v in m["versions"])
    ]
    if not found:
        raise ValueError(f"the default config has no adapter model on {host}")
    return host, dict(version["lora"]), found


def _rebased(model: dict[str, Any], host: str, base: str) -> dict[str, Any]:
    versions = [
        {**v, "adapter": {**v["adapter"], "base": base}} for v in model["versions"] if v["adapter"]["base"] == host
    ]
    return {**model, "versions": versions}


def lora_adapters() -> tuple[str, ...]:
    """The adapter model names of chat-lora-on: the default config's, then LORA_COPY."""
    return (*(m["name"] for m in _lora_host()[2]), LORA_COPY)


def embeddings_args() -> dict[str, Any]:
    """The default embedding model twice: its configured batching, and batches of one."""
    args, model = default_args(), _default_model(EMBED_MODEL)
    (version,) = model["versions"]
    unbatched_version = {**version, "batching": {**version.get("batching", {}), "max_batch_size": 1}}
    models = [{**model, "name": BATCHED}, {**model, "name": UNBATCHED, "versions": [unbatched_version]}]
    return {"ingress": args.get("ingress", {}), "limits": args.get("limits", {}), "models": models}


def noop_config() -> GraphConfig:
    """One single-version no-op model (benchmark 2) and one stable/canary pair per share (benchmark 4)."""

    def version(label: str) -> dict[str, Any]:
        return {"version": label, "engine": "transformers", "weights": {"path": "/nonexistent"}, "num_cpus": 0.05}

    models: list[dict[str, Any]] = [{"name": NOOP_MODEL, "role": "chat", "versions": [version("v1")]}]
    for share in CANARY_SHARES:
        models.append(
            {
                "name": canary_model(share),
                "role": "chat",
                "default_version": "stable",
                "versions": [version("stable"), version("canary")],
                "weights": {"stable": 100 - share, "canary": share},
            }
        )
    ingress = default_args().get("ingress", {})
    return load_config({"ingress": ingress, "models": models, "verify_weights": False})


def noop_app() -> Application:
    """The product's Ingress, bound as bind_graph binds it, with a NoopChat replica per model version."""
    from deployments.graph import bind_ingress

    config = noop_config()
    handles: dict[str, dict[str, Application]] = {}
    for model in config.models:
        for version in model.versions:
            replica: Deployment = NoopChat.options(  # type: ignore[attr-defined]
                name=deployment_name(model, version),
                ray_actor_options={"num_cpus": version.num_cpus},
                max_ongoing_requests=version.max_ongoing_requests,
                max_queued_requests=version.max_queued_requests,
            )
            handles.setdefault(model.name, {})[version.version] = replica.bind(model, version)
    return bind_ingress(config, handles, None)


def build(name: str, ingress_max_ongoing: int | None = None) -> Application:
    """`ingress_max_ongoing` overrides the ingress's max_ongoing_requests (Serve's default is 5), to measure a
    change of that default without editing the product."""
    import deployments.graph
    import deployments.ingress

    if ingress_max_ongoing is not None:
        patched = deployments.ingress.Ingress.options(max_ongoing_requests=ingress_max_ongoing)  # type: ignore[attr-defined]
        setattr(deployments.graph, "Ingress", patched)  # noqa: B010 - both modules' name, for bind_graph and noop_app
        setattr(deployments.ingress, "Ingress", patched)  # noqa: B010
    build_app = deployments.graph.build_app
    if name == "noop":
        return noop_app()
    if name == "chat":
        return build_app(chat_args())
    if name == "default":
        return build_app(default_args())
    if name == "embeddings":
        return build_app(embeddings_args())
    if name in PREFIX_GRAPHS:
        return build_app(prefix_args(name))
    if name in STREAM_INTERVALS:
        return build_app(stream_interval_args(name))
    if name in LORA_GRAPHS:
        return build_app(lora_args(name))
    raise ValueError(f"unknown bench graph {name!r}")
