"""Shared fixtures: one Ray cluster per test session, started only by tests that need it."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

TEST_HTTP_PORT = int(os.environ.get("INFERENCE_GRAPH_TEST_PORT", "8123"))

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[str]:
    """A local Ray cluster with Serve's proxy on TEST_HTTP_PORT; yields the base URL."""
    import ray
    from ray import serve

    # Two logical GPUs let the GPU-pooling tests check packing on a CPU host (no replica here uses a real GPU).
    ray.init(num_cpus=4, num_gpus=2, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": TEST_HTTP_PORT})
    try:
        yield f"http://127.0.0.1:{TEST_HTTP_PORT}"
    finally:
        if ray.is_initialized():
            serve.shutdown()
            ray.shutdown()
