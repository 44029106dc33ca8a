"""The Grafana dashboard: the committed JSON is the generated one, it queries every catalog metric and nothing
unknown, its layout is valid, and promtool parses every query."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from app.observability import catalog, dashboard
from tests.unit.observability.helpers import OBS, promtool


def committed_dashboard() -> dict[str, Any]:
    board: dict[str, Any] = json.loads((OBS / "grafana" / "inference-graph.json").read_text())
    return board


def test_committed_dashboard_is_the_generated_one() -> None:
    text = (OBS / "grafana" / "inference-graph.json").read_text()
    assert text == dashboard.render(), (
        "re-run: python -m app.observability.dashboard --write observability/grafana/inference-graph.json"
    )


def test_dashboard_queries_every_catalog_metric_and_nothing_unknown() -> None:
    queried = dashboard.queried_metrics(committed_dashboard())
    ours = {m.exported for m in catalog.METRICS}
    assert ours <= queried, f"not on the dashboard: {sorted(ours - queried)}"
    assert queried - ours == {"ray_serve_deployment_queued_queries", "ray_serve_replica_processing_queries"}


def test_dashboard_layout_is_valid() -> None:
    board = committed_dashboard()
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24
        if panel["type"] != "row":
            assert panel["targets"] and all(t["expr"] for t in panel["targets"])
    titles = " ".join(p["title"].lower() for p in board["panels"])
    for topic in (
        "route",
        "latency",
        "first token",
        "tokens per second",
        "batch",
        "queue",
        "canary",
        "breaker",
        "cache",
    ):
        assert topic in titles, topic


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """promtool parses each query (as a recording rule), with Grafana's variables filled in."""
    exprs = [t["expr"] for p in committed_dashboard()["panels"] for t in p.get("targets", [])]
    rules = [
        {"record": f"dashboard:query_{i}", "expr": e.replace("$__rate_interval", "5m").replace("$model", ".*")}
        for i, e in enumerate(exprs)
    ]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(exprs)} rules found" in result.stdout
