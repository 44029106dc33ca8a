"""The metric catalog: names, labels and buckets that Ray exports as they are."""

from __future__ import annotations

import re

from app.observability import catalog


def test_catalog_names_labels_and_buckets() -> None:
    names = [m.name for m in catalog.METRICS]
    assert len(names) == len(set(names))
    for spec in catalog.METRICS:
        assert re.fullmatch(r"inference_graph_[a-z0-9_]+", spec.name), spec.name
        assert not spec.name.endswith("_total"), "Ray adds _total to counters"
        assert not {"deployment", "replica", "application"} & set(spec.labels), "Ray reserves these tags"
        if spec.kind is catalog.Kind.HISTOGRAM:
            assert list(spec.buckets) == sorted(set(spec.buckets)) and spec.buckets[0] > 0
        else:
            assert spec.buckets == ()
    assert catalog.REQUESTS.samples == ("ray_inference_graph_requests_total",)
    assert catalog.LATENCY.samples[0] == "ray_inference_graph_request_latency_seconds_bucket"
    assert 5.0 in catalog.LATENCY.buckets, "the p99 > 5 s alert needs a bucket edge at 5 s"
    assert all(m.producer for m in catalog.METRICS), "every metric has a producer"
