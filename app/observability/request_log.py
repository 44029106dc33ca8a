"""The request log: one JSON line per request (id, route, model@version, tier, status, tokens, latency, overhead),
with prompt and completion text only when configured. Lines are handed to a writer thread, so the event loop never
waits on the file or the terminal."""

from __future__ import annotations

import json
import queue
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from app.observability.record import RequestRecord


def log_entry(record: RequestRecord, with_content: bool, wall_time: float | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "ts": datetime.fromtimestamp(time.time() if wall_time is None else wall_time, UTC).isoformat(
            timespec="milliseconds"
        ),
        "request_id": record.request_id,
        "trace_id": record.trace_id,
        "route": record.route,
        "model": record.model or None,
        "version": record.version or None,
        "served_by": f"{record.model}@{record.version}" if record.version else None,
        "tier": record.tier or None,
        "experiment": record.experiment or None,
        "reason": record.reason or None,
        "stream": record.stream,
        "attempts": record.attempts,
        "status": record.status,
        "error_code": record.error_code,
        "prompt_tokens": record.prompt_tokens,
        "completion_tokens": record.completion_tokens,
        "latency_ms": _ms(record.latency_s),
        "ttft_ms": _ms(record.ttft_s),
        "engine_ms": _ms(record.engine_s) if record.report else None,
        "overhead_ms": _ms(record.overhead_s(record.latency_s)) if record.latency_s is not None else None,
        "replica": record.report.replica or None if record.report else None,
    }
    if with_content:
        entry["prompt"] = record.prompt
        entry["completion"] = "".join(record.completion) if record.completion else None
    return entry


def log_line(record: RequestRecord, with_content: bool, wall_time: float | None = None) -> str:
    return json.dumps(log_entry(record, with_content, wall_time), ensure_ascii=False, separators=(",", ":"))


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


class RequestLog:
    """Appends lines to a file, or writes them to stdout (a Ray worker's log, which `serve run` shows)."""

    def __init__(self, path: str | None = None) -> None:
        self._path = Path(path).expanduser() if path else None
        self._lines: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._drain, name="request-log", daemon=True)
        self._thread.start()

    def write(self, line: str) -> None:
        self._lines.put(line)

    def close(self, timeout_s: float = 5.0) -> None:
        self._lines.put(None)
        self._thread.join(timeout_s)

    def _drain(self) -> None:
        out: TextIO
        if self._path is None:
            out = sys.stdout
        else:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            out = self._path.open("a", encoding="utf-8")
        try:
            while (line := self._lines.get()) is not None:
                batch = [line]
                while not self._lines.empty() and len(batch) < 1000:  # write what has piled up in one go
                    nxt = self._lines.get()
                    if nxt is None:
                        self._write(out, batch)
                        return
                    batch.append(nxt)
                self._write(out, batch)
        finally:
            if out is not sys.stdout:
                out.close()

    @staticmethod
    def _write(out: TextIO, lines: list[str]) -> None:
        try:
            out.write("\n".join(lines) + "\n")
            out.flush()
        except (OSError, ValueError) as exc:  # a full disk or a closed stream must not kill the thread
            print(f"request log: {exc}", file=sys.stderr)
