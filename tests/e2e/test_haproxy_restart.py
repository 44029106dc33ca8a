"""The graph behind Serve's HAProxy ingress, on a Ray cluster of its own (`bench.graph_server`: the product's Ingress
over a no-op chat replica), killed the way `ray stop` or a crash kills it and started again on the same port.

Ray 2.60 starts HAProxy as a child of the Serve proxy; without the launcher (deployments/haproxy_launcher.py) it
outlived the kill, kept the port, and the second start failed to bind."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil

from app.config import LimitsConfig
from app.haproxy import bundled_binary, haproxy_env
from bench.graphs import NOOP_MODEL
from tests.eventually import HTTP_RETRIED, eventually

ROOT = Path(__file__).resolve().parents[2]
# Serve's direct-ingress ports of this cluster: apart from the session cluster's (Serve's default, 30000-31000)
DIRECT_INGRESS = {
    "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": "34000",
    "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": "34100",
    "RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT": "44000",
    "RAY_SERVE_DIRECT_INGRESS_MAX_GRPC_PORT": "44100",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listeners(port: int) -> list[psutil._common.sconn]:
    return [c for c in psutil.net_connections("tcp") if c.status == psutil.CONN_LISTEN and c.laddr.port == port]


@contextmanager
def graph_server(port: int, env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "bench.graph_server", "noop", str(port)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(30)


def wait_serving(base: str, process: subprocess.Popen[bytes], log: Path) -> None:
    def ready() -> None:
        assert process.poll() is None, f"the graph server exited with {process.returncode}: {log.read_text()[-3000:]}"
        assert httpx.get(f"{base}/ready", timeout=5).status_code == 200

    eventually(ready, what=f"{base}/ready", timeout_s=300, interval_s=1, retry_on=HTTP_RETRIED)


def streamed_chat(base: str) -> list[str]:
    body = {"model": NOOP_MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "stream": True}
    with httpx.stream("POST", f"{base}/v1/chat/completions", json=body, timeout=60) as response:
        assert response.status_code == 200, response.read()
        return [line.removeprefix("data: ") for line in response.iter_lines() if line.startswith("data: ")]


def test_killed_and_started_again_on_the_same_port(tmp_path: Path) -> None:
    port, stats_port, metrics_port = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        **DIRECT_INGRESS,
        **haproxy_env(
            LimitsConfig().request_timeout_s,
            os.cpu_count() or 1,
            binary=bundled_binary(),
            stats_port=stats_port,
            metrics_port=metrics_port,
        ),
    }
    base, log = f"http://127.0.0.1:{port}", tmp_path / "graph.log"

    with graph_server(port, env, log) as first:
        wait_serving(base, first, log)
        (serving,) = listeners(port)
        haproxy = psutil.Process(serving.pid)
        assert haproxy.name() == "haproxy" and serving.laddr.ip == "127.0.0.1"
        assert [c.laddr.ip for c in listeners(stats_port)] == ["127.0.0.1"]  # not every interface
        events = streamed_chat(base)  # server-sent events pass through HAProxy unbuffered and complete
        assert events[-1] == "[DONE]" and json.loads(events[0])["object"] == "chat.completion.chunk"

        os.killpg(first.pid, signal.SIGKILL)  # the driver, its raylet and GCS, as `ray stop` or a crash does

        def released() -> None:
            assert not haproxy.is_running() or haproxy.status() == psutil.STATUS_ZOMBIE
            assert not listeners(port) and not listeners(stats_port) and not listeners(metrics_port)

        eventually(released, what="HAProxy to exit and free its ports", timeout_s=60, interval_s=0.5)

    with graph_server(port, env, log) as second:
        wait_serving(base, second, log)
        assert streamed_chat(base)[-1] == "[DONE]"
        second.send_signal(signal.SIGTERM)  # a clean stop: the graph server shuts Serve and Ray down
        second.wait(120)

        def port_free() -> None:
            assert not listeners(port)

        eventually(port_free, what="the port to be free", timeout_s=60)
