"""The OTLP exporter that Ray Serve loads (`app.observability.tracing:otlp_exporter`): it follows OpenTelemetry's
standard variables."""

from __future__ import annotations

import pytest

from app.observability import tracing


@pytest.mark.parametrize(
    ("protocol", "module"),
    [(None, "proto.http"), ("http/protobuf", "proto.http"), ("grpc", "proto.grpc")],
)
def test_otlp_exporter_follows_the_standard_variables(
    monkeypatch: pytest.MonkeyPatch, protocol: str | None, module: str
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://collector:4318/v1/traces")
    if protocol:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
    (processor,) = tracing.otlp_exporter()
    exporter = processor._batch_processor._exporter  # type: ignore[attr-defined]
    assert module in type(exporter).__module__
    if module == "proto.http":
        assert exporter._endpoint == "http://collector:4318/v1/traces"
    processor.shutdown()


def test_otlp_exporter_rejects_an_unknown_protocol(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json")
    with pytest.raises(ValueError, match="http/json"):
        tracing.otlp_exporter()
