"""The servers a comparison runs, each a subprocess on its own loopback port, started and stopped in turn so that
the two sides of a comparison never share the CPUs."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from enum import Enum
from pathlib import Path

import httpx

from app.config import LimitsConfig, ModelVersion
from app.engines.vllm_chat import cpu_environment, vllm_argv
from app.haproxy import bundled_binary, haproxy_env
from bench.graphs import CHAT_MODEL, ROOT

LOGS = ROOT / ".cache" / "bench"  # git-ignored
PORTS = {
    "vllm": 8152,
    "plain": 8153,
    "graph": 8154,
    "graph-throughput": 8155,
    "graph-python-proxy": 8174,
    "chat": 8156,
    "embeddings": 8157,
    "prefix-one": 8159,
    "prefix-pow2": 8160,
    "prefix-prefix": 8161,
    "default": 8164,
    "chat-stream-1": 8165,
    "chat-stream-4": 8166,
    "chat-stream-8": 8167,
    "chat-lora-off": 8168,
    "chat-lora-on": 8169,
}
METRICS_PORT = 8162  # Ray's metrics export port in a bench graph's cluster (one graph runs at a time)
DIRECT_INGRESS_PORT = 8158  # RAY_SERVE_THROUGHPUT_OPTIMIZED: the ingress replica serves HTTP itself, on this port


def _python() -> str:
    return sys.executable


Server = AbstractContextManager[str]


@contextmanager
def server(
    name: str, argv: list[str], port: int, ready_path: str, timeout_s: float, env: dict[str, str], attempts: int = 2
) -> Iterator[str]:
    """Starts `argv`, waits for 200 on `ready_path`, yields the base URL; stops the process (and its group) after.
    A process that exits while starting is started again (Ray's start-up can time out on a busy host)."""
    LOGS.mkdir(parents=True, exist_ok=True)
    base = f"http://127.0.0.1:{port}"
    if _listening(port):
        raise RuntimeError(f"port {port} is taken (a server left from an earlier run?); {name} needs it")
    for attempt in range(1, attempts + 1):
        log_path = LOGS / f"{name}.log"
        log = log_path.open("w")
        process = subprocess.Popen(
            argv, cwd=ROOT, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        started = time.monotonic()
        try:
            _wait_ready(process, base + ready_path, timeout_s, log_path)
        except ServerExited:
            _stop(process)
            log.close()
            if attempt == attempts:
                raise
            print(f"  {name}: exited while starting; starting it again", file=sys.stderr, flush=True)
            continue
        except BaseException:
            _stop(process)
            log.close()
            raise
        break
    print(f"  {name}: ready in {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    try:
        yield base
    finally:
        _stop(process)
        log.close()


class ServerExited(RuntimeError):
    pass


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _wait_ready(process: subprocess.Popen[bytes], url: str, timeout_s: float, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerExited(f"{process.args!r} exited with {process.returncode}; see {log}")
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} not ready after {timeout_s:.0f} s; see {log}")


def _stop(process: subprocess.Popen[bytes], grace_s: float = 60) -> None:
    """SIGTERM (the graph server then shuts Ray down), then SIGKILL to the whole process group."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        with suppress(subprocess.TimeoutExpired):
            process.wait(grace_s)
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # whatever of its group is left (Ray workers, vLLM's engine)
    process.wait(10)


class Front(Enum):
    """What takes a bench graph's HTTP requests."""

    HAPROXY = "haproxy"  # Serve's HAProxy ingress, as `make serve` runs the graph
    PYTHON_PROXY = "python-proxy"  # Serve's Python proxy, reaching the ingress over gRPC
    DIRECT = "direct"  # RAY_SERVE_THROUGHPUT_OPTIMIZED=1 and no proxy: the ingress replica's own HTTP server


def front_env(front: Front) -> dict[str, str]:
    if front is Front.HAPROXY:
        return haproxy_env(LimitsConfig().request_timeout_s, os.cpu_count() or 1, binary=bundled_binary())
    env = {"RAY_SERVE_ENABLE_HA_PROXY": "0", "RAY_SERVE_PROXY_USE_GRPC": "1"}
    if front is Front.DIRECT:  # Serve picks the replica's port from a range; pin it to ours
        env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] = "1"
        env["RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT"] = str(DIRECT_INGRESS_PORT)
        env["RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT"] = str(DIRECT_INGRESS_PORT + 1)
    return env


def graph(name: str, *, front: Front = Front.HAPROXY, timeout_s: float = 300) -> Server:
    """A bench graph (`bench.graphs`) behind `front`; by default as `make serve` runs the product."""
    key = {Front.DIRECT: "graph-throughput", Front.PYTHON_PROXY: "graph-python-proxy"}.get(
        front, "graph" if name == "noop" else name
    )
    env = {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "0", "BENCH_METRICS_PORT": str(METRICS_PORT), **front_env(front)}
    argv = [_python(), "-m", "bench.graph_server", name, str(PORTS[key])]
    label = f"graph-{name}" + ("" if front is Front.HAPROXY else f"-{front.value}")
    started = server(label, argv, PORTS[key], "/ready", timeout_s, env)
    return _direct(started) if front is Front.DIRECT else started


@contextmanager
def _direct(proxied: Server, timeout_s: float = 60) -> Iterator[str]:
    """The graph's ingress replica's own HTTP server, once it answers /ready (the proxy's port answered first)."""
    with proxied:
        base = f"http://127.0.0.1:{DIRECT_INGRESS_PORT}"
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if httpx.get(base + "/ready", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"no direct ingress on {base} after {timeout_s:.0f} s")
            time.sleep(0.5)
        yield base


def plain(timeout_s: float = 60) -> Server:
    argv = [_python(), "-m", "bench.plain_server", str(PORTS["plain"])]
    return server("plain", argv, PORTS["plain"], "/health", timeout_s, {})


def vllm_openai(version: ModelVersion, model_dir: Path, timeout_s: float = 300) -> Server:
    """vLLM's own OpenAI server with the flags the graph's replica of `version` runs with (`vllm_argv`)."""
    flags = vllm_argv(
        model_dir,
        CHAT_MODEL,
        version.vllm,
        max_model_len=version.max_model_len,
        gpu_memory_utilization=version.gpu_memory_utilization,
        chat_template=version.vllm.chat_template_path(),
        lora=version.lora,
    )
    argv = [_python(), "-m", "vllm.entrypoints.openai.api_server", *flags, "--host", "127.0.0.1"]
    argv += ["--port", str(PORTS["vllm"])]
    env = cpu_environment(version.vllm.kv_cache_space_gb)
    return server("vllm-openai", argv, PORTS["vllm"], "/health", timeout_s, env)
