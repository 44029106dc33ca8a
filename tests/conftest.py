"""Shared fixtures: one Ray cluster per test session, started only by tests that need it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

TEST_HTTP_PORT = int(os.environ.get("INFERENCE_GRAPH_TEST_PORT", "8123"))
# Ray's metrics export port and the OTLP receiver of the tracing tests, derived from the HTTP port so that sessions
# with their own HTTP port do not collide (and kept out of Ray's worker port range, 10002-19999).
TEST_METRICS_PORT = int(os.environ.get("INFERENCE_GRAPH_TEST_METRICS_PORT", str(TEST_HTTP_PORT + 20000)))
TEST_OTLP_PORT = int(os.environ.get("INFERENCE_GRAPH_TEST_OTLP_PORT", str(TEST_HTTP_PORT + 21000)))
TRACE_EXPORTER = "app.observability.tracing:otlp_exporter"
# HAProxy's stats page and metrics exporter (Ray's defaults, 8404 and 9101, would collide with another cluster on this
# host); kept off Serve's direct-ingress ports (30000-31000) and out of Ray's worker port range (10002-19999)
TEST_HAPROXY_STATS_PORT = TEST_HTTP_PORT + 24000
TEST_HAPROXY_METRICS_PORT = TEST_HTTP_PORT + 25000

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def request_log_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where every ingress of the session writes its request log (one JSON line per request)."""
    return tmp_path_factory.mktemp("request-log") / "requests.jsonl"


@pytest.fixture(scope="session")
def ray_cluster(request_log_path: Path) -> Iterator[str]:
    """A local Ray cluster with Serve's proxy on TEST_HTTP_PORT, metrics on TEST_METRICS_PORT, and tracing on with a
    sampling ratio of 0: only requests whose `traceparent` is sampled are traced, to the OTLP receiver on
    TEST_OTLP_PORT. Yields the base URL."""
    import ray
    from ray import serve

    from app.config import LimitsConfig
    from app.haproxy import bundled_binary, haproxy_env

    # Serve's HAProxy ingress, as `make serve` runs the graph; Ray's processes read it from their environment
    os.environ.update(
        haproxy_env(
            LimitsConfig().request_timeout_s,
            os.cpu_count() or 1,
            binary=bundled_binary(),
            stats_port=TEST_HAPROXY_STATS_PORT,
            metrics_port=TEST_HAPROXY_METRICS_PORT,
        )
    )
    env = {
        # Ray 2.60's proxy reads its tracing setup from these variables only (not from tracing_config)
        "RAY_SERVE_TRACING_EXPORTER_IMPORT_PATH": TRACE_EXPORTER,
        "RAY_SERVE_TRACING_SAMPLING_RATIO": "0",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"http://127.0.0.1:{TEST_OTLP_PORT}/v1/traces",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "OTEL_SERVICE_NAME": "inference-graph-tests",
        "INFERENCE_GRAPH_REQUEST_LOG": str(request_log_path),
    }
    # Two logical GPUs let the GPU-pooling tests check packing on a CPU host (no replica here uses a real GPU).
    ray.init(
        address="local",  # a cluster of its own, even when another one runs on this host (tests/cluster, say)
        num_cpus=4,
        num_gpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": env},
        _metrics_export_port=TEST_METRICS_PORT,
    )
    serve.start(
        http_options={"host": "127.0.0.1", "port": TEST_HTTP_PORT},
        tracing_config={"enabled": True, "exporter_import_path": TRACE_EXPORTER, "sampling_ratio": 0.0},
    )
    try:
        yield f"http://127.0.0.1:{TEST_HTTP_PORT}"
    finally:
        if ray.is_initialized():
            serve.shutdown()
            ray.shutdown()
