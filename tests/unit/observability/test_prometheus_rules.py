"""The Prometheus rules and scrape config (observability/prometheus/): they pass promtool's checks and their own
unit tests, and name only metrics of the catalog (and DCGM's GPU utilisation)."""

from __future__ import annotations

import re

import yaml

from app.observability import catalog
from tests.unit.observability.helpers import OBS, promtool


def test_rules_and_scrape_config_pass_promtool_check() -> None:
    for args in (("check", "rules", "rules.yml"), ("check", "config", "prometheus.yml")):
        result = promtool(*args)
        assert result.returncode == 0, result.stdout + result.stderr


def test_rules_pass_their_unit_tests() -> None:
    result = promtool("test", "rules", "rules_test.yml")
    assert result.returncode == 0 and "SUCCESS" in result.stdout, result.stdout + result.stderr


def rule_exprs() -> list[str]:
    groups = yaml.safe_load((OBS / "prometheus" / "rules.yml").read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def test_rules_name_only_catalog_metrics_and_dcgm() -> None:
    ours = {m.exported for m in catalog.METRICS}
    named = set()
    for expr in rule_exprs():
        for name in re.findall(r"\b(ray_[a-z0-9_]+|DCGM_[A-Z_]+)", expr):
            named.add(re.sub(r"_(bucket|sum|count|total)$", "", name))
    assert named - ours == {"DCGM_FI_DEV_GPU_UTIL"}
    alerts = {
        r["alert"]
        for g in yaml.safe_load((OBS / "prometheus" / "rules.yml").read_text())["groups"]
        for r in g["rules"]
        if "alert" in r
    }
    assert {
        "InferenceGraphHighLatencyP99",
        "InferenceGraphGPUUnderutilized",
        "InferenceGraphCanaryErrorRate",
        "InferenceGraphBreakerOpen",
    } <= alerts
