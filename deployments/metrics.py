"""The graph's metrics on Ray's metrics port: one object per process holds a `ray.serve.metrics` metric for every
entry of `app/observability/catalog.py`, and one method per event records it.

Cheap on the request path: a Ray metric call costs tens of microseconds, so counter increments are summed in a dict
(under a lock nobody waits on) and gauges keep their last value there, and a daemon thread hands both to Ray once a
second; histograms are observed at once. Ray exports every 10 s, so the delay does not show. (Setting the queue-depth
gauge at Ray on every admission and release took 7 % of the ingress's CPU under load.) The same thread sets every
gauge's last value again every few seconds: Ray's metrics agent drops a gauge series that its process has not set
within two export intervals, so a gauge set once (a load time, a closed breaker) would otherwise vanish."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Any, cast

from ray.serve.metrics import Counter, Gauge, Histogram

from app.observability import catalog as c
from app.observability.record import RequestRecord

logger = logging.getLogger("ray.serve")
Metric = Counter | Gauge | Histogram
FLUSH_S = 1.0  # counters handed to Ray this often
GAUGE_RESEND_S = 4.0  # gauges' last values set again this often, under Ray's export interval (10 s by default)
Key = tuple[int, tuple[str, ...]]


def _build(spec: c.MetricSpec) -> Metric:
    labels = cast("tuple[str]", spec.labels)  # Ray annotates tag_keys as a 1-tuple; any tuple of str works
    if spec.kind is c.Kind.COUNTER:
        return Counter(spec.name, description=spec.description, tag_keys=labels)
    if spec.kind is c.Kind.GAUGE:
        return Gauge(spec.name, description=spec.description, tag_keys=labels)
    return Histogram(spec.name, description=spec.description, boundaries=list(spec.buckets), tag_keys=labels)


class GraphMetrics:
    def __init__(self) -> None:
        m: dict[str, Any] = {spec.name: _build(spec) for spec in c.METRICS}
        self._requests: Counter = m[c.REQUESTS.name]
        self._errors: Counter = m[c.ERRORS.name]
        self._latency: Histogram = m[c.LATENCY.name]
        self._ttft: Histogram = m[c.TTFT.name]
        self._prompt_tokens: Counter = m[c.PROMPT_TOKENS.name]
        self._completion_tokens: Counter = m[c.COMPLETION_TOKENS.name]
        self._overhead: Histogram = m[c.OVERHEAD.name]
        self._upstream: Counter = m[c.UPSTREAM.name]
        self._decisions: Counter = m[c.ROUTE_DECISIONS.name]
        self._breaker: Gauge = m[c.BREAKER_STATE.name]
        self._canary_weight: Gauge = m[c.CANARY_WEIGHT.name]
        self._rollout_step: Gauge = m[c.ROLLOUT_STEP.name]
        self._rollout_phase: Gauge = m[c.ROLLOUT_PHASE.name]
        self._batch_size: Histogram = m[c.BATCH_SIZE.name]
        self._batch_wait: Histogram = m[c.BATCH_WAIT.name]
        self._load: Gauge = m[c.MODEL_LOAD.name]
        self._warmup: Gauge = m[c.MODEL_WARMUP.name]
        self._queue_depth: Gauge = m[c.QUEUE_DEPTH.name]
        self._cache: Counter = m[c.CACHE_LOOKUPS.name]
        self._shed: Counter = m[c.SHED.name]
        self._prefix_routes: Counter = m[c.PREFIX_ROUTES.name]
        self._prefix_queries: Counter = m[c.PREFIX_CACHE_QUERIES.name]
        self._prefix_hits: Counter = m[c.PREFIX_CACHE_HITS.name]
        self._lock = threading.Lock()
        self._counts: dict[Key, tuple[Counter, dict[str, str], float]] = {}  # not yet handed to Ray
        self._gauges: dict[Key, tuple[Gauge, dict[str, str], float]] = {}  # last values
        self._changed: set[Key] = set()  # gauges whose last value Ray has not been given yet
        self._thread: threading.Thread | None = None

    # ---- the ingress, per request ---------------------------------------------------------------------------

    def request(self, record: RequestRecord) -> None:
        """A finished request: count, latency, tokens, time to first token, the graph's overhead; its error."""
        model, version, route, status = record.model, record.version, record.route, str(record.status)
        self._inc(self._requests, 1, model=model, version=version, tier=record.tier, route=route, status=status)
        if record.latency_s is not None:
            tags = {"model": model, "version": version, "tier": record.tier, "route": route, "status": status}
            self._latency.observe(record.latency_s, tags)
        if not record.ok:
            self._inc(
                self._errors, 1, model=model, version=version, route=route, status=status, code=record.error_code or ""
            )
        if record.report is None:
            return
        if record.prompt_tokens:
            self._inc(
                self._prompt_tokens, record.prompt_tokens, model=model, version=version, tier=record.tier, route=route
            )
        if record.completion_tokens:
            self._inc(
                self._completion_tokens,
                record.completion_tokens,
                model=model,
                version=version,
                tier=record.tier,
                route=route,
            )
        ttft = record.ttft_s
        if ttft is not None:
            self._ttft.observe(ttft, {"model": model, "version": version, "tier": record.tier, "route": route})
        if record.latency_s is not None:
            overhead = record.overhead_s(record.latency_s)
            self._overhead.observe(overhead, {"model": model, "version": version, "route": route})

    def route_decision(self, model: str, version: str, tier: str, experiment: str, reason: str) -> None:
        self._inc(self._decisions, 1, model=model, version=version, tier=tier, experiment=experiment, reason=reason)

    def upstream(self, model: str, version: str, ok: bool, breakers: Mapping[str, str]) -> None:
        """One call to a model version and its outcome; the breakers' states after it."""
        self._inc(self._upstream, 1, model=model, version=version, outcome="ok" if ok else "error")
        self.breakers(model, breakers)

    def breakers(self, model: str, states: Mapping[str, str]) -> None:
        for version, state in states.items():
            self._set(self._breaker, c.BREAKER_VALUES[state], model=model, version=version)

    # ---- the rollout controller -------------------------------------------------------------------------------

    def rollout(self, model: str, canary: str, weight: float, step: int, phase: str, phases: tuple[str, ...]) -> None:
        self._set(self._canary_weight, weight, model=model, version=canary)
        self._set(self._rollout_step, float(step), model=model, version=canary)
        for name in phases:
            self._set(self._rollout_phase, 1.0 if name == phase else 0.0, model=model, version=canary, phase=name)

    # ---- model replicas ---------------------------------------------------------------------------------------

    def batch(self, model: str, version: str, size: int, longest_wait_s: float) -> None:
        tags = {"model": model, "version": version}
        self._batch_size.observe(size, tags)
        self._batch_wait.observe(longest_wait_s, tags)

    def model_loaded(self, model: str, version: str, engine: str, seconds: float) -> None:
        self._set(self._load, seconds, model=model, version=version, engine=engine)

    def prefix_cache(self, model: str, version: str, queried_tokens: int, hit_tokens: int) -> None:
        """The engine's prefix-cache lookups since its last report (Ray adds the replica label)."""
        self._inc(self._prefix_queries, queried_tokens, model=model, version=version)
        self._inc(self._prefix_hits, hit_tokens, model=model, version=version)

    # ---- routers ------------------------------------------------------------------------------------------------

    def prefix_route(self, target: str, reason: str) -> None:
        self._inc(self._prefix_routes, 1, target=target, reason=reason)

    # ---- the guards (admission, cache, shedding) and warm-up --------------------------------------------------

    def model_warmed(self, model: str, version: str, seconds: float) -> None:
        self._set(self._warmup, seconds, model=model, version=version)

    def queue_depth(self, model: str, priority: str, depth: int) -> None:
        self._set(self._queue_depth, float(depth), model=model, priority=priority)

    def cache_lookup(self, model: str, version: str, route: str, hit: bool) -> None:
        self._inc(self._cache, 1, model=model, version=version, route=route, result="hit" if hit else "miss")

    def shed(self, model: str, route: str, priority: str, status: int) -> None:
        self._inc(self._shed, 1, model=model, route=route, priority=priority, status=str(status))

    # ---- plumbing -----------------------------------------------------------------------------------------------

    def _inc(self, counter: Counter, value: float, **tags: str) -> None:
        if value <= 0:  # Ray's Counter.inc refuses 0, and a refusal in the flush thread would end it
            return
        key = (id(counter), tuple(tags.values()))
        with self._lock:
            pending = self._counts.get(key)
            self._counts[key] = (counter, tags, value + (pending[2] if pending else 0.0))
        if self._thread is None:
            self._start()

    def _set(self, gauge: Gauge, value: float, **tags: str) -> None:
        key = (id(gauge), tuple(tags.values()))
        with self._lock:
            last = self._gauges.get(key)
            self._gauges[key] = (gauge, tags, value)
            if last is None or last[2] != value:
                self._changed.add(key)
        if self._thread is None:
            self._start()

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._background, name="graph-metrics", daemon=True)
                self._thread.start()

    def flush(self) -> None:
        """Hand the summed counter increments, and the gauges' changed values, to Ray."""
        with self._lock:
            counts, self._counts = self._counts, {}
            changed = [self._gauges[key] for key in self._changed]
            self._changed = set()
        for counter, tags, value in counts.values():
            counter.inc(value, tags)
        for gauge, tags, value in changed:
            gauge.set(value, tags)

    def _resend_gauges(self) -> None:
        with self._lock:
            current = list(self._gauges.values())
        for gauge, tags, value in current:
            gauge.set(value, tags)

    def _background(self) -> None:
        resent = time.monotonic()
        while True:
            time.sleep(FLUSH_S)
            try:
                self.flush()
                if time.monotonic() - resent >= GAUGE_RESEND_S:
                    resent = time.monotonic()
                    self._resend_gauges()
            except Exception:  # one bad value must not end the metrics of the whole process
                logger.exception("handing metrics to Ray failed")
