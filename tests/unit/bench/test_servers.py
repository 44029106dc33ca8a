"""bench/servers.py: the environment each front of a bench graph runs with."""

from __future__ import annotations

from bench.servers import DIRECT_INGRESS_PORT, Front, front_env


def test_haproxy_is_the_default_front_as_make_serve_runs_it() -> None:
    env = front_env(Front.HAPROXY)
    assert env["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
    assert env["RAY_SERVE_HAPROXY_BINARY_PATH"].endswith("deployments/haproxy_launcher.py")
    assert int(env["RAY_SERVE_HAPROXY_HARD_STOP_AFTER_S"]) > 300  # the default request timeout


def test_the_other_fronts_turn_haproxy_off() -> None:
    python_proxy, direct = front_env(Front.PYTHON_PROXY), front_env(Front.DIRECT)
    assert python_proxy == {"RAY_SERVE_ENABLE_HA_PROXY": "0", "RAY_SERVE_PROXY_USE_GRPC": "1"}
    assert direct["RAY_SERVE_ENABLE_HA_PROXY"] == "0" and direct["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1"
    assert direct["RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT"] == str(DIRECT_INGRESS_PORT)
