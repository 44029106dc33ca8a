from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.config import GraphConfig, load_config
from tests.eventually import HTTP_RETRIED, eventually
from tests.tiny_models import build_tiny_chat_model, build_tiny_embedding_model

APP_NAME = "tiny-graph"


def tiny_chat_version(path: Path, label: str = "v1", **extra: object) -> dict[str, object]:
    """A chat version on the tiny transformers model, with a small share of a CPU."""
    return {
        "version": label,
        "engine": "transformers",
        "weights": {"path": str(path)},
        "device": "cpu",
        "max_model_len": 256,
        "num_cpus": 0.05,
        **extra,
    }


def tiny_encoder_version(path: Path, **extra: object) -> dict[str, object]:
    """An embedding or rerank version on the tiny sentence-transformers model."""
    return {
        "version": "v1",
        "engine": "sentence-transformers",
        "weights": {"path": str(path)},
        "device": "cpu",
        "num_cpus": 0.05,
        **extra,
    }


def file_keys_auth(secrets: Path, **extra: object) -> dict[str, object]:
    """guards.auth with the client keys in `secrets/keys` and no keys from the environment."""
    return {"enabled": True, "keys_env": None, "admin_keys_env": None, "keys_file": str(secrets / "keys"), **extra}


def tiny_config(chat_path: Path, embed_path: Path) -> GraphConfig:
    def chat_version(label: str, **extra: object) -> dict[str, object]:
        return tiny_chat_version(chat_path, label, **extra)

    def encoder(name: str, role: str, **extra: object) -> dict[str, object]:
        return {"name": name, "role": role, "versions": [tiny_encoder_version(embed_path, **extra)]}

    def traffic_model(name: str, faulty: str | None = None, **traffic: object) -> dict[str, object]:
        """A stable and a second version; `faulty` names a version that fails every call."""
        second = "bad" if faulty == "bad" else "canary"
        versions = [
            chat_version(label, **({"faults": {"abort_percent": 100}} if label == faulty else {}))
            for label in ("stable", second)
        ]
        return {
            "name": name,
            "role": "chat",
            "default_version": "stable",
            "versions": versions,
            "retry": {"attempts": 2, "per_try_timeout_s": 30},
            **traffic,
        }

    def rollout(min_requests: int) -> dict[str, object]:
        return {
            "canary": "canary",
            "steps": [50, 100],
            "step_duration_s": 1.0,
            "gates": {"min_requests": min_requests, "max_error_rate": 0.1, "max_p99_ratio": 20},
        }

    return load_config(
        {
            "ingress": {"num_cpus": 0.1},
            "limits": {"max_body_bytes": 64 * 1024, "request_timeout_s": 60},
            "models": [
                {
                    "name": "tiny-chat",
                    "role": "chat",
                    "versions": [
                        chat_version(
                            "v1", max_output_tokens=64, batching={"max_batch_size": 8, "batch_wait_timeout_s": 0.05}
                        ),
                        chat_version("v2"),
                    ],
                },
                traffic_model(
                    "tiny-flaky",
                    faulty="bad",
                    weights={"stable": 50, "bad": 50},
                    breaker={"failure_threshold": 2, "recovery_time_s": 60},
                ),
                traffic_model("tiny-faulty-canary", faulty="canary", rollout=rollout(min_requests=4)),
                traffic_model("tiny-healthy-canary", rollout=rollout(min_requests=3)),
                traffic_model("tiny-manual-canary", rollout={**rollout(min_requests=3), "auto_start": False}),
                encoder("tiny-embed", "embedding", batching={"max_batch_size": 16, "batch_wait_timeout_s": 0.1}),
                encoder("tiny-rerank", "rerank"),
            ],
            "routing": {
                "rules": [
                    {
                        "name": "legacy-prefix",
                        "match": {"path_prefix": "/openai/v1/"},
                        "actions": {"rewrite_path": "/v1/"},
                    },
                    {
                        "name": "completions-as-chat",
                        "match": {"path_prefix": "/v1/completions", "headers": {"x-model-type": {"exact": "chat"}}},
                        "actions": {"rewrite_path": "/v1/chat/completions"},
                    },
                    {"name": "alias", "match": {"model": "gpt-4o-mini"}, "actions": {"set_model": "tiny-chat"}},
                ],
                "tiers": [
                    {"name": "small", "model": "tiny-chat", "max_tokens": 60},
                    {"name": "large", "model": "tiny-chat"},
                ],
                "experiments": {"tiny-next": {"model": "tiny-chat", "version": "v2"}},
                "sync_interval_s": 0.1,
            },
        }
    )


@pytest.fixture(scope="session")
def tiny_paths(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("tiny-models")
    return build_tiny_chat_model(root / "chat"), build_tiny_embedding_model(root / "embed")


@pytest.fixture(scope="package")
def graph(ray_cluster: str, tiny_paths: tuple[Path, Path]) -> Iterator[str]:
    """The whole graph on tiny local models, served by real Ray Serve; yields the base URL."""
    from ray import serve

    from deployments.graph import bind_graph

    serve.run(bind_graph(tiny_config(*tiny_paths)), name=APP_NAME, route_prefix="/")
    wait_ready(ray_cluster, timeout_s=120)
    try:
        yield ray_cluster
    finally:
        serve.delete(APP_NAME)


@contextmanager
def app_beside(graph: str, config: GraphConfig, name: str) -> Iterator[str]:
    """Another application of the graph on the session's cluster, under the route prefix /<name>, once ready;
    yields its base URL and deletes it after."""
    from ray import serve

    from deployments.graph import bind_graph

    serve.run(bind_graph(config), name=name, route_prefix=f"/{name}")
    base = f"{graph}/{name}"
    wait_ready(base, timeout_s=120)
    try:
        yield base
    finally:
        serve.delete(name)


def wait_ready(base: str, timeout_s: float) -> None:
    """Until the graph at `base` answers /ready with 200 (every deployment of it up)."""

    def ready() -> None:
        response = httpx.get(f"{base}/ready", timeout=5)
        assert response.status_code == 200, f"{response.status_code} {response.text[:200]}"

    eventually(ready, what=f"{base}/ready to answer 200", timeout_s=timeout_s, interval_s=0.5, retry_on=HTTP_RETRIED)


def rollout_state(base: str, model: str) -> dict[str, Any]:
    """`model`'s rollout, as GET /admin/rollouts reports it."""
    states = httpx.get(f"{base}/admin/rollouts", timeout=30).json()["rollouts"]
    return next(s for s in states if s["model"] == model)


def drive_rollout(
    base: str, model: str, send: Callable[[int], httpx.Response], timeout_s: float = 90
) -> tuple[dict[str, Any], list[int]]:
    """Requests four at a time (`send(i)` sends the i-th) until `model`'s rollout ends, rolled back or promoted: its
    state then, and the status of every request sent."""
    statuses: list[int] = []

    def ended() -> dict[str, Any]:
        for _ in range(4):
            statuses.append(send(len(statuses)).status_code)
        state = rollout_state(base, model)
        assert state["phase"] in ("rolled-back", "promoted"), state
        return state

    return eventually(ended, what=f"the rollout of {model} to end", timeout_s=timeout_s, interval_s=0), statuses
