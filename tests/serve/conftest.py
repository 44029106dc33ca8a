from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.config import GraphConfig, load_config
from tests.tiny_models import build_tiny_chat_model, build_tiny_embedding_model

APP_NAME = "tiny-graph"


def tiny_config(chat_path: Path, embed_path: Path) -> GraphConfig:
    small = {"num_cpus": 0.1}
    return load_config(
        {
            "ingress": {"num_cpus": 0.1},
            "limits": {"max_body_bytes": 64 * 1024, "request_timeout_s": 60},
            "models": [
                {
                    "name": "tiny-chat",
                    "role": "chat",
                    "versions": [
                        {
                            "version": "v1",
                            "engine": "transformers",
                            "weights": {"path": str(chat_path)},
                            "device": "cpu",
                            "max_model_len": 256,
                            "max_output_tokens": 64,
                            **small,
                            "batching": {"max_batch_size": 8, "batch_wait_timeout_s": 0.05},
                        },
                        {
                            "version": "v2",
                            "engine": "transformers",
                            "weights": {"path": str(chat_path)},
                            "device": "cpu",
                            "max_model_len": 256,
                            **small,
                        },
                    ],
                },
                {
                    "name": "tiny-embed",
                    "role": "embedding",
                    "versions": [
                        {
                            "version": "v1",
                            "engine": "sentence-transformers",
                            "weights": {"path": str(embed_path)},
                            "device": "cpu",
                            **small,
                            "batching": {"max_batch_size": 16, "batch_wait_timeout_s": 0.1},
                        },
                    ],
                },
                {
                    "name": "tiny-rerank",
                    "role": "rerank",
                    "versions": [
                        {
                            "version": "v1",
                            "engine": "sentence-transformers",
                            "weights": {"path": str(embed_path)},
                            "device": "cpu",
                            **small,
                        },
                    ],
                },
            ],
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


def wait_ready(base: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        try:
            last = httpx.get(f"{base}/ready", timeout=5)
            if last.status_code == 200:
                return
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.5)
    raise TimeoutError(f"graph not ready after {timeout_s}s: {last}")
