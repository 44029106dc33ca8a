"""Observability without Ray: the metric catalog, per-request records, engine metering, the request log line, GenAI
span attributes, the OTLP exporter for Ray Serve's tracing, and the Grafana dashboard. `deployments/metrics.py` turns
the catalog into `ray.serve.metrics` objects."""
