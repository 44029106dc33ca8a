"""The Grafana dashboard for the graph, generated so that its queries name only metrics that exist.

`python -m app.observability.dashboard --write observability/grafana/inference-graph.json` writes it; a unit test
checks that the committed file is this output, and a serve test that every metric it queries is on Ray's metrics
port (ours from app/observability/catalog.py, and Ray Serve's own queue metrics).
"""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

UID = "inference-graph"
RATE = "$__rate_interval"
SEL = 'model=~"$model"'
G = "ray_inference_graph_"


@dataclass(frozen=True)
class Panel:
    title: str
    targets: tuple[tuple[str, str], ...]  # (PromQL, legend)
    unit: str = "short"
    kind: str = "timeseries"
    description: str = ""
    width: int = 12
    mappings: list[dict[str, Any]] = field(default_factory=list)


def _rate(metric: str, where: str = SEL) -> str:
    return f"rate({G}{metric}{{{where}}}[{RATE}])"


def _quantile(q: float, metric: str, by: str, where: str = SEL) -> str:
    return f"histogram_quantile({q}, sum by (le, {by}) ({_rate(metric + '_bucket', where)}))"


def _percentiles(metric: str, by: str, percents: tuple[int, ...], where: str = SEL) -> tuple[tuple[str, str], ...]:
    """One query per percentile, each legend `pNN` and the `by` labels (e.g. `p99 {{model}} {{route}}`)."""
    labels = " ".join(f"{{{{{label.strip()}}}}}" for label in by.split(","))
    return tuple((_quantile(n / 100, metric, by, where), f"p{n} {labels}") for n in percents)


def _ratio(metric: str, part: str, by: str) -> str:
    return f"sum by ({by}) ({_rate(metric, SEL + ',' + part)}) / sum by ({by}) ({_rate(metric)})"


BREAKER_MAPPINGS = [
    {"type": "value", "options": {"0": {"text": "closed", "color": "green"}}},
    {"type": "value", "options": {"1": {"text": "half-open", "color": "yellow"}}},
    {"type": "value", "options": {"2": {"text": "open", "color": "red"}}},
]

ROWS: tuple[tuple[str, tuple[Panel, ...]], ...] = (
    (
        "Traffic",
        (
            Panel(
                "Requests by route and version",
                ((f"sum by (route, model, version) ({_rate('requests_total')})", "{{route}} {{model}}@{{version}}"),),
                "reqps",
            ),
            Panel(
                "Errors by status and code",
                ((f"sum by (model, status, code) ({_rate('errors_total')})", "{{model}} {{status}} {{code}}"),),
                "reqps",
            ),
            Panel(
                "Server error ratio by version (5xx)",
                ((_ratio("requests_total", 'status=~"5.."', "model, version"), "{{model}}@{{version}}"),),
                "percentunit",
            ),
            Panel(
                "Route decisions (tier, experiment, split, fallback)",
                (
                    (
                        f"sum by (model, version, tier, experiment, reason) ({_rate('route_decisions_total')})",
                        "{{model}}@{{version}} {{reason}} {{tier}} {{experiment}}",
                    ),
                ),
                "reqps",
            ),
        ),
    ),
    (
        "Latency",
        (
            Panel(
                "End-to-end latency",
                _percentiles("request_latency_seconds", "model", (50, 95, 99), SEL + ',status!~"4.."'),
                "s",
                description="At the ingress, from the request reaching it to its last byte; client errors left out.",
            ),
            Panel(
                "Time to first token",
                _percentiles("time_to_first_token_seconds", "model", (50, 99)),
                "s",
            ),
            Panel(
                "Graph overhead (time outside the engine)",
                _percentiles("overhead_seconds", "model, route", (50, 99)),
                "s",
                description="End-to-end latency less the engine's time; each response also carries it as the "
                "x-graph-overhead-ms header.",
            ),
        ),
    ),
    (
        "Throughput and batching",
        (
            Panel(
                "Tokens per second",
                (
                    (f"sum by (model, version) ({_rate('completion_tokens_total')})", "out {{model}}@{{version}}"),
                    (f"sum by (model, version) ({_rate('prompt_tokens_total')})", "in {{model}}@{{version}}"),
                ),
                "short",
            ),
            Panel(
                "Batch size (p50, p90) and batch wait (p99)",
                (
                    (_quantile(0.5, "batch_size", "model, version"), "size p50 {{model}}@{{version}}"),
                    (_quantile(0.9, "batch_size", "model, version"), "size p90 {{model}}@{{version}}"),
                    (_quantile(0.99, "batch_wait_seconds", "model, version"), "wait p99 (s) {{model}}@{{version}}"),
                ),
                "short",
                description="Quantiles, not means: Ray 2.60 exports a histogram's _sum from bucket midpoints.",
            ),
        ),
    ),
    (
        "Queues and shedding",
        (
            Panel(
                "Queue depth by priority class",
                ((f"sum by (model, priority) ({G}queue_depth{{{SEL}}})", "{{model}} {{priority}}"),),
                description="Requests admitted and in flight at the ingresses, per priority class.",
            ),
            Panel(
                "Ray Serve queues per deployment",
                (
                    ("sum by (deployment) (ray_serve_deployment_queued_queries)", "queued at handles {{deployment}}"),
                    ("sum by (deployment) (ray_serve_replica_processing_queries)", "running {{deployment}}"),
                ),
                description="Ray Serve's own metrics: requests waiting at handles for a replica, and running in "
                "replicas.",
            ),
            Panel(
                "Shed requests",
                ((f"sum by (model, priority, status) ({_rate('shed_requests_total')})", "{{model}} {{priority}}"),),
                "reqps",
            ),
        ),
    ),
    (
        "Rollouts and breakers",
        (
            Panel(
                "Canary weight",
                ((f"max by (model, version) ({G}canary_weight_percent{{{SEL}}})", "{{model}}@{{version}}"),),
                "percent",
            ),
            Panel(
                "Rollout step and phase",
                (
                    (f"max by (model, version) ({G}rollout_step{{{SEL}}})", "step {{model}}@{{version}}"),
                    (
                        f"max by (model, version, phase) ({G}rollout_phase{{{SEL}}}) == 1",
                        "{{phase}} {{model}}@{{version}}",
                    ),
                ),
                kind="table",
            ),
            Panel(
                "Circuit breakers",
                ((f"max by (model, version) ({G}breaker_state{{{SEL}}})", "{{model}}@{{version}}"),),
                kind="state-timeline",
                mappings=BREAKER_MAPPINGS,
            ),
            Panel(
                "Upstream error ratio by version (retries included)",
                ((_ratio("upstream_requests_total", 'outcome="error"', "model, version"), "{{model}}@{{version}}"),),
                "percentunit",
            ),
        ),
    ),
    (
        "Cache and models",
        (
            Panel(
                "Cache hit rate",
                ((_ratio("cache_lookups_total", 'result="hit"', "model"), "{{model}}"),),
                "percentunit",
            ),
            Panel(
                "Model load and warm-up time",
                (
                    (f"max by (model, version, engine) ({G}model_load_seconds{{{SEL}}})", "load {{model}}@{{version}}"),
                    (f"max by (model, version) ({G}model_warmup_seconds{{{SEL}}})", "warm-up {{model}}@{{version}}"),
                ),
                "s",
                kind="bargauge",
            ),
        ),
    ),
    (
        "Prefix cache",
        (
            Panel(
                "Prefix-cache hit rate per replica (vLLM's own statistics)",
                (
                    (
                        f"sum by (model, version, replica) ({_rate('prefix_cache_hit_tokens_total')}) / "
                        f"sum by (model, version, replica) ({_rate('prefix_cache_queried_tokens_total')})",
                        "{{model}}@{{version}} {{replica}}",
                    ),
                ),
                "percentunit",
                description="Share of prompt tokens the engine found in its prefix cache.",
            ),
            Panel(
                "Prefix-cache router decisions",
                ((f"sum by (target, reason) ({_rate('prefix_routes_total', '')})", "{{target}} {{reason}}"),),
                "reqps",
                description="prefix: sent where its prefix is cached; least-loaded: no replica holds it; overloaded: "
                "the one that does is over the load bound; by-load: the prompt cannot be read; error: the policy "
                "failed.",
            ),
        ),
    ),
)


def _panel(panel: Panel, pid: int, x: int, y: int) -> dict[str, Any]:
    targets = [
        {"refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend, "datasource": {"uid": "${datasource}"}}
        for i, (expr, legend) in enumerate(panel.targets)
    ]
    out: dict[str, Any] = {
        "id": pid,
        "type": panel.kind,
        "title": panel.title,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": 8, "w": panel.width, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": panel.unit, "mappings": panel.mappings}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
        "targets": targets,
    }
    if panel.description:
        out["description"] = panel.description
    if panel.kind == "table":
        out["targets"] = [{**t, "instant": True, "format": "table"} for t in targets]
    return out


def dashboard() -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    y, pid = 0, 1
    for title, row in ROWS:
        panels.append({"id": pid, "type": "row", "title": title, "collapsed": False, "gridPos": _grid(0, y, 24, 1)})
        pid, y, x = pid + 1, y + 1, 0
        for panel in row:
            if x + panel.width > 24:
                x, y = 0, y + 8
            panels.append(_panel(panel, pid, x, y))
            pid, x = pid + 1, x + panel.width
        y += 8
    return {
        "uid": UID,
        "title": "Inference graph",
        "description": "Traffic, latency, tokens, batching, queues, rollouts, breakers and cache of the inference "
        "graph (Ray Serve). Generated by app/observability/dashboard.py.",
        "tags": ["ray-serve", "inference-graph"],
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "timezone": "browser",
        "templating": {
            "list": [
                {"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus"},
                {
                    "name": "model",
                    "label": "model",
                    "type": "query",
                    "datasource": {"type": "prometheus", "uid": "${datasource}"},
                    "query": {"query": f"label_values({G}requests_total, model)", "refId": "models"},
                    "definition": f"label_values({G}requests_total, model)",
                    "includeAll": True,
                    "multi": True,
                    "allValue": ".*",
                    "current": {"text": "All", "value": "$__all"},
                    "refresh": 2,
                },
            ]
        },
        "annotations": {"list": []},
        "panels": panels,
    }


def _grid(x: int, y: int, w: int, h: int) -> dict[str, int]:
    return {"h": h, "w": w, "x": x, "y": y}


def render() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


METRIC = re.compile(r"\b(ray_[a-z0-9_]+|DCGM_[A-Z0-9_]+)\b")
SUFFIXES = ("_bucket", "_sum", "_count", "_total")


def queried_metrics(board: dict[str, Any]) -> set[str]:
    """The metric families the dashboard's queries name (sample suffixes removed)."""
    names: set[str] = set()
    texts = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    texts += [v["definition"] for v in board["templating"]["list"] if "definition" in v]
    for text in texts:
        for name in METRIC.findall(text):
            for suffix in SUFFIXES:
                if name.endswith(suffix):
                    name = name[: -len(suffix)]
                    break
            names.add(name)
    return names


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", type=Path, help="write the dashboard JSON to this file (default: print it)")
    args = parser.parse_args(argv)
    if args.write:
        args.write.write_text(render())
    else:
        print(render(), end="")


if __name__ == "__main__":
    main()
