"""One bench graph on its own Ray cluster, in its own process: `python -m bench.graph_server NAME PORT`.
Runs until SIGTERM or SIGINT, then shuts Serve and Ray down."""

from __future__ import annotations

import os
import signal
import sys
import threading

APP_NAME = "bench"


def main(name: str, port: int) -> None:
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray
    from ray import serve

    from bench.graphs import build, default_logging_config

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    ray.init(
        address="local",
        num_cpus=4,  # logical: replicas ask for fractions; the host has what it has
        include_dashboard=False,
        log_to_driver=False,
        object_store_memory=256 * 1024 * 1024,
        _metrics_export_port=int(os.environ.get("BENCH_METRICS_PORT", "0")) or None,
    )
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        override = os.environ.get("BENCH_INGRESS_MAX_ONGOING")
        app = build(name, int(override) if override else None)
        serve.run(app, name=APP_NAME, route_prefix="/", logging_config=default_logging_config())
        print(f"bench graph {name} deployed on port {port}", flush=True)
        stop.wait()
    finally:
        serve.shutdown()  # type: ignore[no-untyped-call]
        ray.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
