"""A small graph on tiny local models for the reliability tests, on the session's Ray cluster. Each test has a
model of its own, so that killing a replica or failing a version does not touch the others."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.config import GraphConfig, load_config
from tests.serve.conftest import tiny_chat_version, tiny_encoder_version, wait_ready
from tests.tiny_models import build_tiny_chat_model, build_tiny_embedding_model

APP_NAME = "reliability"
MAX_BODY_BYTES = 64 * 1024
CHAT = "rel-chat"  # bad input and slow clients
SOLO = "rel-solo"  # one version, one replica: killed during load
FLAKY = "rel-flaky"  # a stable version and one that fails every call
EMBED = "rel-embed"
RERANK = "rel-rerank"
BREAKER_THRESHOLD = 3
BAD_DELAY_MS = 1000  # the failing version is slow too, so a request that reached it shows in its latency


def reliability_config(chat: Path, embed: Path) -> GraphConfig:
    def version(label: str, **extra: Any) -> dict[str, Any]:
        return tiny_chat_version(chat, label, max_output_tokens=200, **extra)

    def encoder(name: str, role: str) -> dict[str, Any]:
        return {"name": name, "role": role, "versions": [tiny_encoder_version(embed)]}

    flaky = {
        "name": FLAKY,
        "role": "chat",
        "default_version": "stable",
        "weights": {"stable": 50, "bad": 50},
        "versions": [version("stable"), version("bad", faults={"abort_percent": 100, "delay_ms": BAD_DELAY_MS})],
        "breaker": {"failure_threshold": BREAKER_THRESHOLD, "recovery_time_s": 600},
    }
    return load_config(
        {
            "ingress": {"num_cpus": 0.1},
            "limits": {"max_body_bytes": MAX_BODY_BYTES, "request_timeout_s": 60},
            "models": [
                {"name": CHAT, "role": "chat", "versions": [version("v1")]},
                {"name": SOLO, "role": "chat", "versions": [version("v1")]},
                flaky,
                encoder(EMBED, "embedding"),
                encoder(RERANK, "rerank"),
            ],
            "routing": {"tiers": [{"name": "small", "model": CHAT, "max_tokens": 100}, {"name": "big", "model": CHAT}]},
        }
    )


@pytest.fixture(scope="package")
def reliability_graph(ray_cluster: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from ray import serve

    from deployments.graph import bind_graph

    root = tmp_path_factory.mktemp("reliability-models")
    config = reliability_config(build_tiny_chat_model(root / "chat"), build_tiny_embedding_model(root / "embed"))
    serve.run(bind_graph(config), name=APP_NAME, route_prefix="/")
    wait_ready(ray_cluster, timeout_s=180)
    try:
        yield ray_cluster
    finally:
        serve.delete(APP_NAME)


def chat_body(model: str, content: str = "hello", max_tokens: int = 8, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens, **extra}
