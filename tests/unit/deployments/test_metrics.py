"""deployments/metrics.py without a cluster: what reaches Ray's metric objects, and when (they are replaced by
recorders here)."""

from __future__ import annotations

from typing import Any

import pytest

from deployments.metrics import GraphMetrics


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, float, dict[str, str]]] = []

    def set(self, value: float, tags: dict[str, str]) -> None:
        self.calls.append(("set", value, dict(tags)))

    def inc(self, value: float, tags: dict[str, str]) -> None:
        self.calls.append(("inc", value, dict(tags)))


@pytest.fixture
def metrics(monkeypatch: pytest.MonkeyPatch) -> tuple[GraphMetrics, Recorder, Recorder]:
    m = GraphMetrics()
    gauge, counter = Recorder(), Recorder()
    monkeypatch.setattr(m, "_queue_depth", gauge)
    monkeypatch.setattr(m, "_shed", counter)
    monkeypatch.setattr(m, "_start", lambda: None)  # no background thread: the test flushes
    return m, gauge, counter


def test_gauges_reach_ray_at_the_flush_with_their_last_value(metrics: Any) -> None:
    m, gauge, _ = metrics
    for depth in (1, 2, 3, 2):  # admissions and releases on the request path
        m.queue_depth("chat", "normal", depth)
    m.queue_depth("chat", "low", 1)
    assert gauge.calls == []  # nothing handed to Ray per request
    m.flush()
    assert sorted(gauge.calls, key=lambda c: c[2]["priority"]) == [
        ("set", 1.0, {"model": "chat", "priority": "low"}),
        ("set", 2.0, {"model": "chat", "priority": "normal"}),
    ]
    m.flush()
    assert len(gauge.calls) == 2  # an unchanged gauge is not set again until the periodic resend
    m.queue_depth("chat", "normal", 2)
    m.flush()
    assert len(gauge.calls) == 2
    m.queue_depth("chat", "normal", 0)
    m.flush()
    assert gauge.calls[-1] == ("set", 0.0, {"model": "chat", "priority": "normal"})
    m._resend_gauges()
    assert len(gauge.calls) == 5  # both series again, so that Ray's agent keeps them


def test_counters_are_summed_until_the_flush(metrics: Any) -> None:
    m, _, counter = metrics
    for _ in range(3):
        m.shed("chat", "/v1/chat/completions", "low", 503)
    assert counter.calls == []
    m.flush()
    assert counter.calls == [
        ("inc", 3.0, {"model": "chat", "route": "/v1/chat/completions", "priority": "low", "status": "503"})
    ]
