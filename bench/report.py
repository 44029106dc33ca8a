"""Tables as Markdown (what the README's results section holds) and the machine the figures come from."""

from __future__ import annotations

import math
import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass, field

from bench.load import Summary


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    failed: bool = False  # some request failed: the figures do not describe a healthy run

    def add(self, *cells: str) -> None:
        if len(cells) != len(self.headers):
            raise ValueError(f"{len(cells)} cells for {len(self.headers)} columns")
        self.rows.append(list(cells))

    def add_run(self, labels: Sequence[str], summary: Summary, verdict: str) -> None:
        """A row of load figures; failed requests also get a note, and mark the table failed."""
        self.add(*labels, *load_cells(summary), verdict)
        if summary.failed:
            self.failed = True
            what = ", ".join(labels)
            self.notes.append(f"FAILED ({what}): {summary.failed} of {summary.sent} requests; {summary.first_error}")

    def markdown(self) -> str:
        lines = [f"### {self.title}", "", "| " + " | ".join(self.headers) + " |"]
        lines.append("|" + "---|" * len(self.headers))
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        lines += [""] + [f"- {note}" for note in self.notes] if self.notes else []
        return "\n".join(lines) + "\n"


def ms(value: float) -> str:
    return "-" if math.isnan(value) else (f"{value:.1f}" if value < 100 else f"{value:.0f}")


def triple(values: Sequence[float]) -> str:
    """p50 / p95 / p99 in one cell."""
    return " / ".join(ms(v) for v in values)


def rate(value: float) -> str:
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def load_cells(summary: Summary) -> list[str]:
    """The load generator's columns: requests ok/sent, req/s, output tok/s, TTFT and e2e p50/p95/p99 in ms."""
    return [
        f"{summary.ok}/{summary.sent}",
        rate(summary.requests_per_s),
        rate(summary.tokens_per_s) if summary.tokens_per_s else "-",
        triple(summary.ttft_ms),
        triple(summary.e2e_ms),
    ]


LOAD_HEADERS = ["ok/sent", "req/s", "out tok/s", "TTFT p50/p95/p99 ms", "e2e p50/p95/p99 ms"]


def ratio(value: float, baseline: float) -> float:
    return value / baseline if baseline > 0 else math.nan


def machine() -> str:
    cores = os.cpu_count() or 0
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    model = _cpu_model()
    memory_gib = _memory_gib()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    return (
        f"{usable} usable of {cores} cores ({model}), {memory_gib:.0f} GiB memory, no GPU used, "
        f"{platform.system()} {platform.release()}; 1-min load average {load:.1f}"
    )


def load_average() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _memory_gib() -> float:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 1024**2
    except OSError:
        pass
    return math.nan
