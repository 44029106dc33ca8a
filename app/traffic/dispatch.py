"""A request's whole life after the plan: admission, the version, the one hop (retried on another version), the
deadline, the response cache, token charges, and the outcome that the breaker and the rollout gates get when the
request ends. A stream is governed to its last byte as a unary call is: its admission slot is held, its deadline
runs and its outcome and latency are recorded until its last event is sent or its client leaves.

The hop itself is an `Upstream` passed in (deployments/upstream.py makes it over Serve's handles), so every path
here runs in unit tests with a test double and no Ray."""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol, TypeVar

from app.config import GraphConfig, ModelConfig, Priority
from app.errors import ErrorInfo, OpenAIError, UpstreamTimeout
from app.guards.admission import Admission
from app.guards.auth import Caller
from app.guards.gate import Gate
from app.guards.stream_charge import StreamCharge
from app.observability.metering import EngineReport, Metered
from app.observability.observer import RequestObserver
from app.observability.record import CLIENT_GONE, RequestRecord
from app.traffic.plan import Plan
from app.traffic.retry import should_retry
from app.traffic.rollout import Outcome
from app.traffic.router import OutcomeLog, VersionRouter

T = TypeVar("T")
logger = logging.getLogger("ray.serve")
SSE_DONE = "data: [DONE]\n\n"


def sse_error(info: ErrorInfo) -> str:
    return f"data: {json.dumps(info.body())}\n\n"


@dataclass(frozen=True)
class Failure:
    """A failed try as the client would see it; `incident` names a failure that many requests share (a replica's
    death), which counts against the version's breaker once."""

    info: ErrorInfo
    incident: str | None = None


class UpstreamStream(Protocol):
    """A replica's stream: its first item is `Metered(first event or ErrorInfo)`, then events (SSE strings), an
    ErrorInfo for a failure inside the stream, and the engine's final `EngineReport`."""

    def __aiter__(self) -> AsyncIterator[Any]: ...

    async def __anext__(self) -> Any: ...

    def cancel(self) -> None: ...


class Upstream(Protocol):
    """The one hop from the ingress to a version's replica."""

    async def call(self, plan: Plan, version: str) -> Metered[Any]:
        """A unary answer: `Metered(response or ErrorInfo)`; raises for a failure of the hop itself."""
        ...

    def stream(self, plan: Plan, version: str) -> UpstreamStream: ...

    def failure(self, exc: Exception) -> Failure:
        """What a failure of the hop means for the client and for the breaker."""
        ...


class DispatchMetrics(Protocol):
    def upstream(self, model: str, version: str, ok: bool, breakers: Mapping[str, str]) -> None: ...

    def queue_depth(self, model: str, priority: str, depth: int) -> None: ...

    def cache_lookup(self, model: str, version: str, route: str, hit: bool) -> None: ...

    def shed(self, model: str, route: str, priority: str, status: int) -> None: ...


@dataclass(frozen=True)
class Reply:
    """A unary answer, as the client gets it."""

    content: bytes
    headers: dict[str, str]


@dataclass(frozen=True)
class Refusal:
    """An error answer before any byte of a response was sent."""

    info: ErrorInfo
    headers: dict[str, str]


@dataclass(frozen=True)
class Stream:
    """A started stream. `end` finishes the request if the HTTP layer stops before reading `events` to the end
    (a client gone before the body started); it is idempotent, and reading to the end calls it too."""

    events: AsyncIterator[str]
    headers: dict[str, str]
    end: Callable[[], None]


Dispatched = Reply | Refusal | Stream


def route_headers(plan: Plan, version: str) -> dict[str, str]:
    headers = {"x-served-by": f"{plan.model.name}@{version}"}
    if plan.tier:
        headers["x-route-tier"] = plan.tier
    if plan.rules:
        headers["x-rewrite"] = ",".join(plan.rules)
    if plan.experiment and plan.pinned:
        headers["x-experiment"] = plan.experiment
    return headers


class Deadline:
    """`limits.request_timeout_s` from the dispatch (the body read and the request planned), for every try and every
    event of its stream."""

    def __init__(self, timeout_s: float, clock: Callable[[], float]) -> None:
        self.timeout_s = timeout_s
        self._clock = clock
        self._at = clock() + timeout_s

    def remaining(self) -> float:
        return self._at - self._clock()

    def expired(self) -> bool:
        return self.remaining() <= 0


class Dispatcher:
    def __init__(
        self,
        config: GraphConfig,
        routers: Mapping[str, VersionRouter],
        gate: Gate,
        observer: RequestObserver,
        metrics: DispatchMetrics,
        outcomes: OutcomeLog,
        upstream: Upstream,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._timeout_s = config.limits.request_timeout_s
        self._routers = routers
        self._gate = gate
        self._observer = observer
        self._metrics = metrics
        self._outcomes = outcomes
        self._upstream = upstream
        self._clock = clock

    async def dispatch(
        self, plan: Plan, record: RequestRecord, caller: Caller | None, priority: Priority
    ) -> Dispatched:
        """Raises an OpenAIError when admission sheds the request; every other failure is a Refusal or an error
        event inside the stream."""
        deadline = Deadline(self._timeout_s, self._clock)
        slot = _Slot(self._gate.admission, self._metrics, plan, priority)
        try:
            if plan.stream:
                return await self._stream(plan, record, caller, deadline, slot)
            return await self._unary(plan, record, caller, deadline)
        finally:
            if not slot.handed_over:
                slot.release()

    # ---- unary ------------------------------------------------------------------------------------------------

    async def _unary(self, plan: Plan, record: RequestRecord, caller: Caller | None, deadline: Deadline) -> Dispatched:
        router, tried, cache = self._routers[plan.model.name], list[str](), self._gate.cache
        per_try = plan.model.retry.per_try_timeout_s
        for attempt in itertools.count(1):
            version, why = router.choose(plan.user, plan.pinned, tried, plan.unable)
            self._observer.routed(record, version, why)
            headers = route_headers(plan, version)
            key = self._gate.key(plan.model.name, version, plan.endpoint.path, plan.body)
            if cache is not None and key is not None:
                hit = await cache.get(key)
                self._metrics.cache_lookup(plan.model.name, version, plan.endpoint.path, hit is not None)
                if hit is not None:
                    router.release(version)
                    return Reply(plan.shape.reply(hit), {**headers, "x-cache": "hit"})
            started = self._clock()
            try:
                answer = await self._attempt(deadline, per_try, plan.model, self._upstream.call(plan, version))
            except BaseException:  # the client went away
                router.release(version)
                raise
            result, incident = self._answered(plan, version, record, answer)
            failed = isinstance(result, ErrorInfo) and result.status >= 500
            self._record(plan.model, version, started, not failed, incident)
            if not isinstance(result, ErrorInfo):
                content = result.model_dump_json().encode()
                self._gate.charge(caller, getattr(getattr(result, "usage", None), "total_tokens", 0) or 0)
                if cache is not None and key is not None:
                    headers["x-cache"] = "miss"
                    await cache.set(key, content)
                return Reply(plan.shape.reply(content), headers)
            if not failed or not self._retries(plan, attempt, result, deadline):
                return Refusal(result, headers)
            tried.append(version)
        raise RuntimeError("unreachable: itertools.count does not end")

    # ---- streams ----------------------------------------------------------------------------------------------

    async def _stream(
        self, plan: Plan, record: RequestRecord, caller: Caller | None, deadline: Deadline, slot: _Slot
    ) -> Dispatched:
        """Retried only before the first event; from it on, a failure is an error event inside the stream."""
        router, tried = self._routers[plan.model.name], list[str]()
        per_try = plan.model.retry.per_try_timeout_s
        for attempt in itertools.count(1):
            version, why = router.choose(plan.user, plan.pinned, tried, plan.unable)
            self._observer.routed(record, version, why)
            headers = route_headers(plan, version)
            started = self._clock()
            upstream = self._upstream.stream(plan, version)
            try:
                first = await self._attempt(deadline, per_try, plan.model, anext(upstream))
            except BaseException:  # the client went away, or the stream ended before its first event
                upstream.cancel()
                router.release(version)
                raise
            if isinstance(first, Failure) or isinstance(first.value, ErrorInfo):
                upstream.cancel()
                refused, incident = self._answered(plan, version, record, first)
                failed = refused.status >= 500
                self._record(plan.model, version, started, not failed, incident)
                if not failed or not self._retries(plan, attempt, refused, deadline):
                    return Refusal(refused, headers)
                tried.append(version)
                continue
            opened: str = first.value
            self._observer.first_event(record, first.report)
            headers.update(self._observer.overhead_headers(record))
            charge = StreamCharge(lambda tokens: self._gate.charge(caller, tokens), first.report)
            life = _StreamLife(
                router,
                version,
                functools.partial(self._record, plan.model, version, started),
                self._observer,
                record,
                upstream,
                charge,
                slot,
            )
            return Stream(self._relay(opened, upstream, plan, record, deadline, life), headers, life.end)
        raise RuntimeError("unreachable: itertools.count does not end")

    async def _relay(
        self,
        first: str,
        upstream: UpstreamStream,
        plan: Plan,
        record: RequestRecord,
        deadline: Deadline,
        life: _StreamLife,
    ) -> AsyncIterator[str]:
        """The replica's events in the client's shape, then `[DONE]`; a failure or the deadline inside the stream is
        an error event before `[DONE]`. The request ends (slot, outcome, record) when this generator does."""
        keep = self._observer.keeps_content
        try:
            if keep:
                self._observer.streamed(record, first)
            yield plan.shape.event(first)
            failure: Failure | None = None
            while failure is None:
                try:
                    item = await self._attempt(deadline, math.inf, plan.model, anext(upstream))
                except StopAsyncIteration:
                    life.completed()
                    break
                if isinstance(item, Failure):
                    failure = item
                elif isinstance(item, EngineReport):
                    record.report = item
                    life.charge.final(item)
                elif isinstance(item, ErrorInfo):
                    failure = Failure(item)
                else:
                    if keep:
                        self._observer.streamed(record, item)
                    life.charge.event()
                    yield plan.shape.event(item)
            if failure is not None:
                life.failed(failure)
                yield sse_error(failure.info)
            yield SSE_DONE
        finally:  # also when the client leaves: the verdict stays "gone" unless the stream had ended
            life.end()

    # ---- shared -----------------------------------------------------------------------------------------------

    async def _attempt(
        self, deadline: Deadline, limit_s: float, model: ModelConfig, awaitable: Awaitable[T]
    ) -> T | Failure:
        """The awaited value, or the failure it ended in: a timeout past the smaller of `limit_s` and the request's
        deadline, or a failure of the hop. The end of a stream (StopAsyncIteration) passes through."""
        try:
            async with asyncio.timeout(min(limit_s, deadline.remaining())):
                return await awaitable
        except StopAsyncIteration:
            raise
        except TimeoutError:
            return Failure(self._timed_out(deadline, model))
        except Exception as exc:
            return self._upstream.failure(exc)

    def _answered(
        self, plan: Plan, version: str, record: RequestRecord, answer: Metered[Any] | Failure
    ) -> tuple[Any, str | None]:
        """Notes a try's answer on the record; returns its value (an ErrorInfo when it failed) and the failure's
        incident."""
        if isinstance(answer, Failure):
            logger.warning("%s@%s failed: %s", plan.model.name, version, answer.info.message)
            self._observer.answered(record, answer.info)
            return answer.info, answer.incident
        self._observer.answered(record, answer)
        return answer.value, None

    def _timed_out(self, deadline: Deadline, model: ModelConfig) -> ErrorInfo:
        if deadline.expired():
            return UpstreamTimeout(f"No answer within the request timeout of {deadline.timeout_s:g} s.").info()
        return UpstreamTimeout(
            f"The model did not answer within its per-try timeout of {model.retry.per_try_timeout_s:g} s."
        ).info()

    def _retries(self, plan: Plan, attempt: int, info: ErrorInfo, deadline: Deadline) -> bool:
        return should_retry(plan.model.retry, attempt, info) and not deadline.expired()

    def _record(self, model: ModelConfig, version: str, started: float, ok: bool, incident: str | None = None) -> None:
        """A try's outcome, for the version's breaker and, with its latency to the last byte, the rollout gates; both
        count a failure with an `incident` once per incident."""
        router = self._routers[model.name]
        router.record(version, ok, incident)
        self._metrics.upstream(model.name, version, ok, router.breaker_states())
        if model.rollout is not None:
            self._outcomes.add(Outcome(model.name, version, ok, (self._clock() - started) * 1000, incident))


class _Verdict(Enum):
    GONE = "gone"  # the client left (or never read the body): no verdict on the version
    OK = "ok"
    FAILED = "failed"


class _StreamLife:
    """What a started stream holds until it ends, and the one place that ends it: the engine's request aborted
    unless it finished, the outcome to the breaker and the gates, the tokens charged, the record finished and the
    admission slot given back."""

    def __init__(
        self,
        router: VersionRouter,
        version: str,
        outcome: Callable[[bool, str | None], None],
        observer: RequestObserver,
        record: RequestRecord,
        upstream: UpstreamStream,
        charge: StreamCharge,
        slot: _Slot,
    ) -> None:
        self._router, self._version, self._outcome = router, version, outcome
        self._observer, self._record = observer, record
        self._upstream = upstream
        self.charge = charge
        self._slot = slot
        slot.handed_over = True
        self._verdict = _Verdict.GONE
        self._failure: Failure | None = None
        self._ended = False

    def completed(self) -> None:
        self._verdict = _Verdict.OK

    def failed(self, failure: Failure) -> None:
        self._record.fail(failure.info)
        self._failure = failure
        self._verdict = _Verdict.FAILED if failure.info.status >= 500 else _Verdict.OK

    def end(self) -> None:
        if self._ended:
            return
        self._ended = True
        try:
            if self._verdict is not _Verdict.OK or self._failure is not None:
                self._upstream.cancel()
            if self._verdict is _Verdict.GONE:
                self._record.status = CLIENT_GONE
                self._router.release(self._version)
            else:
                self._outcome(self._verdict is _Verdict.OK, self._failure.incident if self._failure else None)
            self.charge.close()
            self._observer.finish(self._record)
        finally:
            self._slot.release()


class _Slot:
    """A place in the model's admission queue, held until the request ends; shed requests raise here."""

    def __init__(self, admission: Admission, metrics: DispatchMetrics, plan: Plan, priority: Priority) -> None:
        self._admission, self._metrics, self._priority = admission, metrics, priority
        self._model = plan.model.name
        try:
            admission.enter(self._model, priority, plan.model.queue)
        except OpenAIError as exc:
            metrics.shed(self._model, plan.endpoint.path, priority.value, exc.status)
            raise
        self.handed_over = False  # a started stream holds it past the dispatch
        self._held = True
        self._depth()

    def release(self) -> None:
        if self._held:
            self._held = False
            self._admission.leave(self._model, self._priority)
            self._depth()

    def _depth(self) -> None:
        self._metrics.queue_depth(self._model, self._priority.value, self._admission.depth(self._model, self._priority))
