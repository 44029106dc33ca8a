"""The dispatcher's every path with a scripted upstream and no Ray: admission, retries, deadlines, outcomes, streams
governed to their last byte, and clients that leave."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from app.config import GraphConfig, Priority, load_config
from app.endpoints import Endpoint
from app.errors import ErrorInfo, RateLimited, ServiceUnavailable
from app.guards.gate import Gate
from app.observability.metering import EngineReport, Metered
from app.observability.observer import RequestObserver
from app.observability.record import CLIENT_GONE, RequestRecord
from app.protocol import AssistantMessage, ChatChoice, ChatCompletionRequest, ChatCompletionResponse, Usage
from app.traffic.dispatch import SSE_DONE, Dispatcher, Failure, Refusal, Reply, Stream
from app.traffic.plan import Plan
from app.traffic.rollout import Rollout
from app.traffic.router import OutcomeLog, VersionRouter
from tests.fakes import ManualClock

ROOT = str(Path(__file__).resolve().parents[3])
REPORT = EngineReport(engine_s=0.01, replica_s=0.01, first_token_s=0.01, prompt_tokens=3, completion_tokens=1)
SERVER_ERROR = ErrorInfo(status=500, message="boom", type="server_error")


def config(timeout_s: float = 5.0, **model: Any) -> GraphConfig:
    version = {"engine": "transformers", "weights": {"path": ROOT}}
    return load_config(
        {
            "limits": {"request_timeout_s": timeout_s},
            "models": [
                {
                    "name": "m",
                    "role": "chat",
                    "default_version": "stable",
                    "versions": [{"version": "stable", **version}, {"version": "canary", **version}],
                    "weights": {"stable": 100, "canary": 0},
                    "retry": {"attempts": 2, "per_try_timeout_s": 30},
                    "breaker": {"failure_threshold": 2, "recovery_time_s": 60},
                    **model,
                }
            ],
        }
    )


def reply(text: str = "Paris") -> ChatCompletionResponse:
    return ChatCompletionResponse(
        id="chatcmpl-1",
        created=0,
        model="m",
        choices=[ChatChoice(message=AssistantMessage(content=text), finish_reason="stop")],
        usage=Usage(prompt_tokens=3, completion_tokens=1, total_tokens=4),
    )


def event(text: str) -> str:
    return f"data: {json.dumps({'choices': [{'delta': {'content': text}}]})}\n\n"


@dataclass
class Script:
    """What a version does: a unary answer (or an exception), or the items of its stream, each after a delay."""

    answer: Any = None
    delay_s: float = 0.0
    items: list[Any] = field(default_factory=list)
    item_delay_s: float = 0.0


class FakeStream:
    def __init__(self, script: Script) -> None:
        self._items = list(script.items)
        self._delay_s = script.item_delay_s
        self.cancelled = False
        self.served = 0

    def __aiter__(self) -> AsyncIterator[Any]:
        return self

    async def __anext__(self) -> Any:
        if self.served:
            await asyncio.sleep(self._delay_s)
        if not self._items:
            raise StopAsyncIteration
        item = self._items.pop(0)
        self.served += 1
        if isinstance(item, Exception):
            raise item
        return item

    def cancel(self) -> None:
        self.cancelled = True


class FakeUpstream:
    def __init__(self, **scripts: Script) -> None:
        self.scripts = scripts
        self.calls: list[str] = []
        self.cancelled_calls = 0
        self.streams: list[FakeStream] = []

    async def call(self, plan: Plan, version: str) -> Metered[Any]:
        self.calls.append(version)
        script = self.scripts[version]
        try:
            await asyncio.sleep(script.delay_s)
        except asyncio.CancelledError:
            self.cancelled_calls += 1
            raise
        if isinstance(script.answer, Exception):
            raise script.answer
        return Metered(script.answer, REPORT)

    def stream(self, plan: Plan, version: str) -> FakeStream:
        self.calls.append(version)
        stream = FakeStream(self.scripts[version])
        self.streams.append(stream)
        return stream

    def failure(self, exc: Exception) -> Failure:
        if isinstance(exc, ServiceUnavailable):
            return Failure(exc.info(), incident="replica-1")
        return Failure(SERVER_ERROR)


class Metrics:
    def __init__(self) -> None:
        self.requests: list[RequestRecord] = []
        self.upstreams: list[tuple[str, bool]] = []
        self.shed_statuses: list[int] = []

    def request(self, record: RequestRecord) -> None:
        self.requests.append(record)

    def route_decision(self, model: str, version: str, tier: str, experiment: str, reason: str) -> None:
        return None

    def upstream(self, model: str, version: str, ok: bool, breakers: Any) -> None:
        self.upstreams.append((version, ok))

    def queue_depth(self, model: str, priority: str, depth: int) -> None:
        return None

    def cache_lookup(self, model: str, version: str, route: str, hit: bool) -> None:
        return None

    def shed(self, model: str, route: str, priority: str, status: int) -> None:
        self.shed_statuses.append(status)


class Harness:
    def __init__(self, cfg: GraphConfig, upstream: FakeUpstream) -> None:
        self.config = cfg
        self.upstream = upstream
        self.metrics = Metrics()
        self.gate = Gate(cfg)
        self.outcomes = OutcomeLog()
        self.router = VersionRouter(cfg.models[0], time.monotonic, random.Random(0))
        self.observer = RequestObserver(cfg, self.metrics, None)
        self.dispatcher = Dispatcher(
            cfg, {"m": self.router}, self.gate, self.observer, self.metrics, self.outcomes, upstream
        )

    def plan(self, stream: bool = False, pinned: str | None = None) -> Plan:
        body = ChatCompletionRequest.model_validate(
            {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
        )
        return Plan(Endpoint.CHAT, body, self.config.models[0], pinned=pinned)

    async def dispatch(self, plan: Plan, priority: Priority = Priority.REALTIME) -> tuple[Any, RequestRecord]:
        record = self.observer.begin("/v1/chat/completions", {})
        self.observer.planned(record, plan, {}, "m")
        return await self.dispatcher.dispatch(plan, record, None, priority), record

    def in_flight(self) -> int:
        return sum(self.gate.admission.depth("m", p) for p in Priority)


async def read(stream: Stream) -> list[str]:
    return [e async for e in stream.events]


# ---- unary --------------------------------------------------------------------------------------------------


async def test_a_unary_answer_and_its_outcome() -> None:
    h = Harness(config(), FakeUpstream(stable=Script(reply())))
    result, _ = await h.dispatch(h.plan())
    assert isinstance(result, Reply) and json.loads(result.content)["choices"][0]["message"]["content"] == "Paris"
    assert result.headers["x-served-by"] == "m@stable"
    assert h.metrics.upstreams == [("stable", True)] and h.in_flight() == 0


async def test_a_server_error_is_retried_on_another_version() -> None:
    h = Harness(config(), FakeUpstream(stable=Script(RuntimeError("down")), canary=Script(reply("again"))))
    result, record = await h.dispatch(h.plan())
    assert isinstance(result, Reply) and result.headers["x-served-by"] == "m@canary"
    assert h.upstream.calls == ["stable", "canary"] and record.attempts == 2
    assert h.metrics.upstreams == [("stable", False), ("canary", True)]


async def test_a_clients_mistake_is_answered_not_retried() -> None:
    bad = ErrorInfo(status=400, message="no", type="invalid_request_error")
    h = Harness(config(), FakeUpstream(stable=Script(bad)))
    result, _ = await h.dispatch(h.plan())
    assert isinstance(result, Refusal) and result.info.status == 400
    assert h.upstream.calls == ["stable"] and h.metrics.upstreams == [("stable", True)]


async def test_the_request_timeout_bounds_a_unary_call_and_its_retries() -> None:
    h = Harness(config(timeout_s=0.3), FakeUpstream(stable=Script(reply(), delay_s=5), canary=Script(reply())))
    started = time.monotonic()
    result, _ = await h.dispatch(h.plan())
    assert isinstance(result, Refusal) and result.info.status == 504 and result.info.code == "timeout"
    assert "request timeout of 0.3 s" in result.info.message
    assert time.monotonic() - started < 1.0
    assert h.upstream.calls == ["stable"] and h.upstream.cancelled_calls == 1  # no retry past the deadline
    assert h.metrics.upstreams == [("stable", False)] and h.in_flight() == 0


async def test_a_replica_death_counts_once_however_many_requests_it_held() -> None:
    lost = ServiceUnavailable("replica gone")
    h = Harness(config(retry={"attempts": 1}), FakeUpstream(stable=Script(lost)))
    for _ in range(3):
        result, _ = await h.dispatch(h.plan())
        assert isinstance(result, Refusal) and result.info.status == 503
    assert h.router.breaker_states()["stable"] == "closed"


async def test_a_canary_replicas_death_reaches_the_rollout_gates_as_one_lost_replica() -> None:
    lost = ServiceUnavailable("replica gone")
    rollout_config = {"canary": "canary", "steps": [50, 100], "gates": {"min_requests": 1}}
    upstream = FakeUpstream(canary=Script(lost), stable=Script(reply()))
    h = Harness(config(retry={"attempts": 1}, rollout=rollout_config), upstream)
    result, _ = await h.dispatch(h.plan(pinned="canary"))
    assert isinstance(result, Refusal) and result.info.status == 503
    for _ in range(2):  # the canary is set aside: pinned requests go to stable until it is readmitted
        served, _ = await h.dispatch(h.plan(pinned="canary"))
        assert isinstance(served, Reply) and served.headers["x-served-by"] == "m@stable"
    outcomes = h.outcomes.drain()
    assert [(o.version, o.ok, o.incident) for o in outcomes] == [
        ("canary", False, "replica-1"),
        ("stable", True, None),
        ("stable", True, None),
    ]
    model = h.config.models[0]
    assert model.rollout is not None
    gates = Rollout("m", "stable", model.rollout, ManualClock())
    for outcome in outcomes:
        gates.record(outcome)
    reading = gates.reading()
    assert (reading.canary_replicas_lost, reading.canary_requests, reading.canary_error_rate) == (1, 0, 0.0)


# ---- admission ----------------------------------------------------------------------------------------------


async def test_a_stream_holds_its_admission_slot_until_its_last_event() -> None:
    long = Script(items=[Metered(event("a"), REPORT), event("b"), REPORT], item_delay_s=0.05)
    h = Harness(config(queue={"max_in_flight": 1}), FakeUpstream(stable=long))
    first, _ = await h.dispatch(h.plan(stream=True))
    assert isinstance(first, Stream) and h.in_flight() == 1
    with pytest.raises(RateLimited):  # batch is shed while the first stream still runs
        await h.dispatch(h.plan(stream=True), Priority.BATCH)
    assert h.metrics.shed_statuses == [429]
    events = await read(first)
    assert events[-1] == SSE_DONE and h.in_flight() == 0
    second, _ = await h.dispatch(h.plan(stream=True), Priority.BATCH)
    assert isinstance(second, Stream)
    await read(second)


async def test_a_refused_or_failed_dispatch_gives_its_slot_back() -> None:
    h = Harness(config(retry={"attempts": 1}), FakeUpstream(stable=Script(items=[Metered(SERVER_ERROR, REPORT)])))
    result, _ = await h.dispatch(h.plan(stream=True))
    assert isinstance(result, Refusal) and h.in_flight() == 0


# ---- streams ------------------------------------------------------------------------------------------------


async def test_a_stream_is_recorded_when_it_ends_with_its_whole_latency() -> None:
    items = [Metered(event("a"), REPORT), event("b"), event("c"), REPORT]
    h = Harness(config(rollout={"canary": "canary", "steps": [50, 100]}), FakeUpstream())
    h.upstream.scripts = {"stable": Script(items=items, item_delay_s=0.1), "canary": Script(items=list(items))}
    result, record = await h.dispatch(h.plan(stream=True, pinned="stable"))
    assert isinstance(result, Stream) and h.metrics.upstreams == []  # nothing is judged at the first byte
    events = await read(result)
    assert [json.loads(e[6:])["choices"][0]["delta"]["content"] for e in events[:-1]] == ["a", "b", "c"]
    assert h.metrics.upstreams == [("stable", True)] and record.status == 200 and record.report == REPORT
    (outcome,) = h.outcomes.drain()
    assert outcome.ok and outcome.latency_ms >= 300  # to the last event, as a unary call's is to its answer
    assert h.metrics.requests == [record]


async def test_a_failure_inside_a_stream_is_an_error_event_and_counts_against_the_version() -> None:
    broken = Script(items=[Metered(event("a"), REPORT), SERVER_ERROR])
    h = Harness(config(), FakeUpstream(stable=broken))
    for _ in range(2):
        result, record = await h.dispatch(h.plan(stream=True))
        assert isinstance(result, Stream)
        events = await read(result)
        assert json.loads(events[1][6:])["error"]["message"] == "boom" and events[-1] == SSE_DONE
        assert record.status == 500 and h.upstream.streams[-1].cancelled
    assert h.metrics.upstreams == [("stable", False), ("stable", False)]
    assert h.router.breaker_states()["stable"] == "open"  # the split now sends streams elsewhere


async def test_a_raised_failure_inside_a_stream_is_an_error_event() -> None:
    h = Harness(config(), FakeUpstream(stable=Script(items=[Metered(event("a"), REPORT), RuntimeError("lost")])))
    result, _ = await h.dispatch(h.plan(stream=True))
    assert isinstance(result, Stream)
    events = await read(result)
    assert json.loads(events[1][6:])["error"]["type"] == "server_error" and h.metrics.upstreams == [("stable", False)]


async def test_a_failure_before_the_first_event_is_retried_on_another_version() -> None:
    h = Harness(
        config(),
        FakeUpstream(
            stable=Script(items=[Metered(SERVER_ERROR, REPORT)]), canary=Script(items=[Metered(event("x"), REPORT)])
        ),
    )
    result, _ = await h.dispatch(h.plan(stream=True))
    assert isinstance(result, Stream) and result.headers["x-served-by"] == "m@canary"
    assert h.upstream.streams[0].cancelled
    await read(result)
    assert h.metrics.upstreams == [("stable", False), ("canary", True)]


async def test_the_request_timeout_ends_a_stream_with_an_error_event() -> None:
    slow = Script(items=[Metered(event("a"), REPORT), event("b"), REPORT], item_delay_s=5)
    h = Harness(config(timeout_s=0.3), FakeUpstream(stable=slow))
    started = time.monotonic()
    result, record = await h.dispatch(h.plan(stream=True))
    assert isinstance(result, Stream)
    events = await read(result)
    assert time.monotonic() - started < 1.0
    assert json.loads(events[1][6:])["error"]["code"] == "timeout" and events[-1] == SSE_DONE
    assert h.upstream.streams[0].cancelled and record.status == 504 and h.in_flight() == 0
    assert h.metrics.upstreams == [("stable", False)]


async def test_the_request_timeout_before_the_first_event_is_a_504() -> None:
    slow = Script(items=[Metered(event("a"), REPORT)])
    h = Harness(config(timeout_s=0.2), FakeUpstream(stable=slow))

    async def never(self: FakeStream) -> Any:
        await asyncio.sleep(5)

    stream_cls = type("Hanging", (FakeStream,), {"__anext__": never})
    h.upstream.stream = lambda plan, version: stream_cls(slow)  # type: ignore[method-assign]
    result, _ = await h.dispatch(h.plan(stream=True))
    assert isinstance(result, Refusal) and result.info.status == 504 and h.in_flight() == 0


async def test_a_client_that_leaves_mid_stream_aborts_the_engine_and_judges_nothing() -> None:
    items = [Metered(event("a"), REPORT), event("b"), event("c"), REPORT]
    h = Harness(config(), FakeUpstream(stable=Script(items=items)))
    result, record = await h.dispatch(h.plan(stream=True))
    assert isinstance(result, Stream)
    events = result.events
    await anext(events)
    await events.aclose()  # type: ignore[attr-defined]
    assert h.upstream.streams[0].cancelled and record.status == CLIENT_GONE
    assert h.metrics.upstreams == [] and h.outcomes.drain() == [] and h.in_flight() == 0
    assert h.metrics.requests == [record]


async def test_a_stream_whose_body_never_starts_is_ended_by_the_http_layer() -> None:
    h = Harness(config(), FakeUpstream(stable=Script(items=[Metered(event("a"), REPORT), REPORT])))
    result, record = await h.dispatch(h.plan(stream=True))
    assert isinstance(result, Stream) and h.in_flight() == 1
    result.end()
    result.end()  # idempotent
    assert h.upstream.streams[0].cancelled and record.status == CLIENT_GONE and h.in_flight() == 0
    assert h.metrics.requests == [record]


async def test_a_half_open_probe_whose_client_left_frees_the_probe() -> None:
    h = Harness(config(breaker={"failure_threshold": 1, "recovery_time_s": 0.05}), FakeUpstream())
    h.upstream.scripts = {"stable": Script(items=[Metered(event("a"), REPORT), REPORT]), "canary": Script()}
    h.router.record("stable", ok=False)
    await asyncio.sleep(0.06)  # the 0.05 s recovery time must pass: half-open then, one probe at a time
    first, _ = await h.dispatch(h.plan(stream=True, pinned="stable"))
    assert isinstance(first, Stream) and first.headers["x-served-by"] == "m@stable"
    first.end()
    second, _ = await h.dispatch(h.plan(stream=True, pinned="stable"))
    assert isinstance(second, Stream) and second.headers["x-served-by"] == "m@stable"  # the probe's place was free
    await read(second)
