"""The request log: one JSON line per request, content only when asked, written from its own thread to the path
the config or the environment gives."""

from __future__ import annotations

import json
from pathlib import Path

from app.observability.metering import EngineReport
from app.observability.record import RequestRecord
from app.observability.request_log import RequestLog, log_entry, log_line


def finished_record() -> RequestRecord:
    record = RequestRecord("req-1", "/v1/chat/completions", 0.0, trace_id="ab" * 16, model="m", version="v2")
    record.tier, record.reason, record.attempts, record.latency_s = "small", "split", 1, 0.5
    record.report = EngineReport(0.4, 0.45, 0.1, 12, 3)
    record.prompt, record.completion = [{"role": "user", "content": "secret"}], ["Paris"]
    return record


def test_log_line_is_one_json_object_without_content_unless_asked() -> None:
    line = log_line(finished_record(), with_content=False, wall_time=0.0)
    assert "\n" not in line and "secret" not in line and "Paris" not in line
    entry = json.loads(line)
    assert entry["ts"] == "1970-01-01T00:00:00.000+00:00"
    assert {k: entry[k] for k in ("request_id", "route", "served_by", "tier", "status", "prompt_tokens")} == {
        "request_id": "req-1",
        "route": "/v1/chat/completions",
        "served_by": "m@v2",
        "tier": "small",
        "status": 200,
        "prompt_tokens": 12,
    }
    assert (entry["latency_ms"], entry["engine_ms"], entry["overhead_ms"]) == (500.0, 400.0, 100.0)
    assert "prompt" not in entry and "completion" not in entry
    with_content = log_entry(finished_record(), with_content=True)
    assert with_content["prompt"] == [{"role": "user", "content": "secret"}] and with_content["completion"] == "Paris"


def test_request_log_writes_lines_from_its_thread(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "requests.jsonl"
    log = RequestLog(str(path))
    for i in range(50):
        log.write(json.dumps({"i": i}))
    log.close()
    assert [json.loads(line)["i"] for line in path.read_text().splitlines()] == list(range(50))
