"""Ingress: the OpenAI HTTP surface. Runs the policy pipeline in-process, then makes one hop (retried on failure)."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel
from ray import serve
from ray.serve.handle import DeploymentHandle, DeploymentResponseGenerator

from app.config import GraphConfig, ModelConfig, Priority, Role
from app.errors import (
    ErrorInfo,
    InvalidRequest,
    NotFound,
    OpenAIError,
    PayloadTooLarge,
    to_error_info,
)
from app.guards.auth import Caller
from app.guards.gate import Gate
from app.guards.stream_charge import StreamCharge
from app.observability.metering import EngineReport, Metered
from app.observability.observer import RequestObserver
from app.observability.record import CLIENT_GONE, RequestRecord
from app.observability.request_log import RequestLog
from app.protocol import ModelCard, ModelList
from app.tokenizer import HFTokenizer
from app.traffic.plan import Plan, Planner, tokens_needed
from app.traffic.retry import should_retry
from app.traffic.rollout import Action, Outcome
from app.traffic.router import OutcomeLog, VersionRouter
from deployments.errors import call, first_item, lost_replica, translate
from deployments.metrics import GraphMetrics

Handles = dict[str, dict[str, DeploymentHandle[Any]]]

logger = logging.getLogger("ray.serve")
CATCH_ALL = "/{path:path}"
GAUGE_REFRESH_S = 5.0  # breakers also change with time alone (open -> half-open): their gauges are re-read this often
api = FastAPI(title="inference-graph", description="OpenAI-compatible inference graph on Ray Serve.")


@api.exception_handler(404)
async def _not_found(request: Request, exc: Exception) -> JSONResponse:
    return error_response(NotFound(f"No route for {request.method} {request.url.path}.").info())


@api.exception_handler(405)
async def _bad_method(request: Request, exc: Exception) -> JSONResponse:
    known = {getattr(r, "path", "") for r in request.app.routes} - {CATCH_ALL}
    if _app_path(request) not in known:  # only the POST catch-all matched: the path itself is unknown
        return error_response(NotFound(f"No route for {request.method} {request.url.path}.").info())
    info = ErrorInfo(
        status=405,
        message=f"Method {request.method} is not allowed on {request.url.path}.",
        type="invalid_request_error",
        code="method_not_allowed",
    )
    return error_response(info)


def _app_path(request: Request) -> str:
    """The path within the application: an app deployed under a route prefix sees it as the root path."""
    path, root = request.url.path, request.scope.get("root_path", "")
    return path[len(root) :] or "/" if root and path.startswith(root) else path


def _has_lone_surrogate(value: Any) -> bool:
    """JSON escapes can spell a lone surrogate, which no tokenizer can encode: find one in any string of the body."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, dict):
        return any(_has_lone_surrogate(k) or _has_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_lone_surrogate(v) for v in value)
    return False


def error_response(info: ErrorInfo, headers: dict[str, str] | None = None) -> JSONResponse:
    extra = dict(headers or {})
    if info.status in (429, 503):
        extra.setdefault("retry-after", str(max(1, round(info.retry_after_s or 1))))
    return JSONResponse(status_code=info.status, content=info.body(), headers=extra)


def sse_error(info: ErrorInfo) -> str:
    return f"data: {json.dumps(info.body())}\n\n"


SSE_DONE = "data: [DONE]\n\n"


def _error_info(exc: Exception) -> ErrorInfo:
    info = to_error_info(translate(exc))
    if info.status >= 500:
        logger.error("request failed with %s", info.status, exc_info=exc)
    return info


def _json(model: BaseModel, headers: dict[str, str] | None = None) -> Response:
    return Response(content=model.model_dump_json(), media_type="application/json", headers=headers)


def _route_headers(plan: Plan, version: str) -> dict[str, str]:
    headers = {"x-served-by": f"{plan.model.name}@{version}"}
    if plan.tier:
        headers["x-route-tier"] = plan.tier
    if plan.rules:
        headers["x-rewrite"] = ",".join(plan.rules)
    if plan.experiment and plan.pinned:
        headers["x-experiment"] = plan.experiment
    return headers


async def _sse(
    first: str,
    rest: DeploymentResponseGenerator[Any],
    observer: RequestObserver,
    record: RequestRecord,
    charge: StreamCharge,
) -> AsyncIterator[str]:
    """The replica's events, then `[DONE]`; a failure mid-stream becomes an error event before `[DONE]`.
    A client that goes away cancels this generator, and the `finally` cancels the replica's generation.
    The replica's last item is its engine report, which finishes the request's record and settles its tokens."""
    done = False
    content = observer.keeps_content
    try:
        if content:
            observer.streamed(record, first)
        yield first
        async for event in rest:
            if isinstance(event, EngineReport):
                record.report = event
                charge.final(event)
                continue
            if isinstance(event, ErrorInfo):
                record.fail(event)
                yield sse_error(event)
                break
            if content:
                observer.streamed(record, event)
            charge.event()
            yield event
    except (asyncio.CancelledError, GeneratorExit):
        record.status = CLIENT_GONE
        raise
    except Exception as exc:
        info = to_error_info(translate(exc))
        record.fail(info)
        yield sse_error(info)
    else:
        done = True
    finally:
        if not done:
            rest.cancel()  # type: ignore[no-untyped-call]
        charge.close()
        observer.finish(record)
    yield SSE_DONE


# Everything the routes call is defined above the class: @serve.ingress freezes the FastAPI app (a cloudpickle
# round trip) when the class is decorated, so a helper defined later in this module is missing in the replica.


@serve.deployment
@serve.ingress(api)
class Ingress:
    def __init__(self, config: GraphConfig, handles: Handles, controller: DeploymentHandle[Any] | None) -> None:
        self._config = config
        self._handles = {
            model: {v: h.options(_by_reference=not config.ingress.grpc_handles) for v, h in versions.items()}
            for model, versions in handles.items()
        }
        self._controller = controller
        self._created = int(time.time())
        rng = random.Random()
        self._routers = {m.name: VersionRouter(m, time.monotonic, rng) for m in config.models}
        self._tokenizers: dict[str, HFTokenizer] = {}
        self._planner = Planner(config, self._count_tokens, lambda name: self._routers[name].can_serve())
        self._outcomes = OutcomeLog()
        self._syncer: asyncio.Task[None] | None = None
        self._metrics = GraphMetrics()
        logs = config.observability
        self._observer = RequestObserver(
            config, self._metrics, RequestLog(logs.resolved_request_log_path()) if logs.request_log else None
        )
        self._gauges: asyncio.Task[None] | None = None
        self._gate = Gate(config)

    # ---- endpoints ----------------------------------------------------------------------------------------

    @api.get("/health")
    async def health(self) -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/ready")
    async def ready(self) -> JSONResponse:
        self._ensure_syncing()
        names = [m.name for m in self._config.models]
        states = await asyncio.gather(*(self._probe(m) for m in self._config.models))
        body = {"ready": all(states), "models": dict(zip(names, states, strict=True))}
        return JSONResponse(status_code=200 if all(states) else 503, content=body)

    @api.get("/v1/models")
    async def models(self) -> Response:
        cards = [ModelCard(id=m.name, created=self._created, owned_by="inference-graph") for m in self._config.models]
        return _json(ModelList(data=cards))

    @api.post("/v1/chat/completions")
    async def chat_completions(self, request: Request) -> Response:
        return await self._serve(request)

    @api.post("/v1/completions")
    async def completions(self, request: Request) -> Response:
        return await self._serve(request)

    @api.post("/v1/embeddings")
    async def embeddings(self, request: Request) -> Response:
        return await self._serve(request)

    @api.post("/v1/rerank")
    async def rerank(self, request: Request) -> Response:
        return await self._serve(request)

    @api.get("/admin/rollouts")
    async def rollouts(self, request: Request) -> JSONResponse:
        try:
            self._gate.caller(request.headers, admin=True)
        except OpenAIError as exc:
            return error_response(exc.info())
        states = await call(self._controller.states.remote(), 10) if self._controller else []
        for state in states:
            state["breakers"] = self._routers[state["model"]].breaker_states()
        return JSONResponse({"rollouts": states})

    @api.post("/admin/rollouts/{name}/{action}")
    async def rollout_action(self, name: str, action: str, request: Request) -> JSONResponse:
        try:
            self._gate.caller(request.headers, admin=True)
        except OpenAIError as exc:
            return error_response(exc.info())
        if self._controller is None:
            return error_response(NotFound("No rollouts are configured.").info())
        try:
            act = Action(action)
        except ValueError:
            return error_response(
                NotFound(f"Unknown action '{action}'; use one of {[a.value for a in Action]}.").info()
            )
        result = await call(self._controller.act.remote(name, act), 10)
        if isinstance(result, ErrorInfo):
            return error_response(result)
        await self._sync()
        return JSONResponse(result)

    @api.post(CATCH_ALL)
    async def rewritten(self, request: Request) -> Response:
        """Paths that exist only before a rewrite rule (e.g. a legacy prefix); unmatched ones get a 404."""
        return await self._serve(request)

    # ---- the pipeline and the one hop ---------------------------------------------------------------------

    async def _serve(self, request: Request) -> Response:
        self._ensure_syncing()
        path = _app_path(request)
        record = self._observer.begin(path, request.headers)
        try:
            caller = self._gate.caller(request.headers)
            priority = self._gate.priority(request.headers)
            data = await self._read_json(request)
            plan = await asyncio.to_thread(self._planner.plan, path, request.headers, data)
            asked = data.get("model") if isinstance(data, dict) else None
            self._observer.planned(record, plan, request.headers, asked)
            with self._observer.active(record), self._admitted(plan, priority):
                if plan.stream:
                    response = await self._stream(plan, record, caller)
                else:
                    response = await self._unary(plan, record, caller)
        except Exception as exc:
            info = _error_info(exc)
            record.fail(info)
            response = error_response(info)
        if isinstance(response, StreamingResponse):
            return response  # finished when the stream ends
        response.headers.update(self._observer.finish(record))
        return response

    @contextmanager
    def _admitted(self, plan: Plan, priority: Priority) -> Iterator[None]:
        """Admission by priority class; a shed request is counted, and the queue depth is exported."""
        model, admission = plan.model.name, self._gate.admission
        try:
            admission.enter(model, priority, plan.model.queue)
        except OpenAIError as exc:
            self._metrics.shed(model, plan.endpoint.path, priority.value, exc.status)
            raise
        try:
            self._metrics.queue_depth(model, priority.value, admission.depth(model, priority))
            yield
        finally:
            admission.leave(model, priority)
            self._metrics.queue_depth(model, priority.value, admission.depth(model, priority))

    async def _unary(self, plan: Plan, record: RequestRecord, caller: Caller | None) -> Response:
        router, tried = self._routers[plan.model.name], list[str]()
        cache = self._gate.cache
        for attempt in range(1, plan.model.retry.attempts + 1):
            version, why = router.choose(plan.user, plan.pinned, tried)
            self._observer.routed(record, version, why)
            key = self._gate.key(plan.model.name, version, plan.endpoint.path, plan.body, plan.as_chat)
            if cache is not None and key is not None:
                hit = await cache.get(key)
                self._metrics.cache_lookup(plan.model.name, version, plan.endpoint.path, hit is not None)
                if hit is not None:
                    headers = {**_route_headers(plan, version), "x-cache": "hit"}
                    return Response(content=hit, media_type="application/json", headers=headers)
            handle = self._handles[plan.model.name][version]
            method = getattr(handle, plan.endpoint.method)
            started = time.monotonic()
            answer: Metered[Any] | ErrorInfo
            incident = None
            try:
                answer = await call(method.remote(plan.body, plan.as_chat), plan.model.retry.per_try_timeout_s)
            except Exception as exc:
                answer, incident = to_error_info(translate(exc)), lost_replica(exc)
                logger.warning("%s@%s failed: %s", plan.model.name, version, answer.message)
            self._observer.answered(record, answer)
            result = answer.value if isinstance(answer, Metered) else answer
            failed = isinstance(result, ErrorInfo) and result.status >= 500
            self._record(plan.model, version, not failed, started, incident)
            headers = _route_headers(plan, version)
            if not isinstance(result, ErrorInfo):
                content = result.model_dump_json().encode()
                usage = getattr(result, "usage", None)
                self._gate.charge(caller, getattr(usage, "total_tokens", 0) or 0)
                if cache is not None and key is not None:
                    headers["x-cache"] = "miss"
                    await cache.set(key, content)
                return Response(content=content, media_type="application/json", headers=headers)
            if not failed or not should_retry(plan.model.retry, attempt, result):
                return error_response(result, headers)
            tried.append(version)
        raise AssertionError("unreachable: the last attempt returns")

    async def _stream(self, plan: Plan, record: RequestRecord, caller: Caller | None) -> Response:
        """Retried only before the first byte; after it, a failure is an SSE error event."""
        router, tried = self._routers[plan.model.name], list[str]()
        for attempt in range(1, plan.model.retry.attempts + 1):
            version, why = router.choose(plan.user, plan.pinned, tried)
            self._observer.routed(record, version, why)
            handle = self._handles[plan.model.name][version]
            started = time.monotonic()
            stream: DeploymentResponseGenerator[Any] = handle.options(stream=True).stream.remote(  # type: ignore[assignment]
                plan.body, plan.as_chat
            )
            answer: Metered[Any] | ErrorInfo
            incident = None
            try:
                answer = await first_item(stream, plan.model.retry.per_try_timeout_s)
            except Exception as exc:
                stream.cancel()  # type: ignore[no-untyped-call]
                answer, incident = to_error_info(translate(exc)), lost_replica(exc)
            first = answer.value if isinstance(answer, Metered) else answer
            headers = _route_headers(plan, version)
            if isinstance(first, ErrorInfo):
                self._observer.answered(record, answer)
                failed = first.status >= 500
                self._record(plan.model, version, not failed, started, incident)
                if not failed or not should_retry(plan.model.retry, attempt, first):
                    stream.cancel()  # type: ignore[no-untyped-call]
                    return error_response(first, headers)
                tried.append(version)
                continue
            assert isinstance(answer, Metered)
            self._observer.first_event(record, answer.report)
            self._record(plan.model, version, True, started)
            headers.update(self._observer.overhead_headers(record))
            charge = StreamCharge(lambda tokens: self._gate.charge(caller, tokens), answer.report)
            events = _sse(first, stream, self._observer, record, charge)
            return StreamingResponse(events, media_type="text/event-stream", headers=headers)
        raise AssertionError("unreachable: the last attempt returns")

    def _record(self, model: ModelConfig, version: str, ok: bool, started: float, incident: str | None = None) -> None:
        router = self._routers[model.name]
        router.record(version, ok, incident)
        self._metrics.upstream(model.name, version, ok, router.breaker_states())
        if model.rollout is not None:
            self._outcomes.add(Outcome(model.name, version, ok, (time.monotonic() - started) * 1000))

    # ---- rollout sync -------------------------------------------------------------------------------------

    def _ensure_syncing(self) -> None:
        if self._controller is not None and (self._syncer is None or self._syncer.done()):
            self._syncer = asyncio.get_running_loop().create_task(self._sync_forever())
        if self._gauges is None or self._gauges.done():
            self._gauges = asyncio.get_running_loop().create_task(self._refresh_gauges_forever())

    async def _refresh_gauges_forever(self) -> None:
        while True:
            for name, router in self._routers.items():
                self._metrics.breakers(name, router.breaker_states())
            await asyncio.sleep(GAUGE_REFRESH_S)

    async def _sync_forever(self) -> None:
        while True:
            try:
                await self._sync()
            except Exception as exc:  # the controller restarting must not stop the loop
                logger.warning("rollout sync failed: %s", exc)
            await asyncio.sleep(self._config.routing.sync_interval_s)

    async def _sync(self) -> None:
        if self._controller is None:
            return
        weights = await call(self._controller.sync.remote(self._outcomes.drain()), 5)
        for name, shares in weights.items():
            self._routers[name].set_weights(shares)

    # ---- helpers ----------------------------------------------------------------------------------------------

    async def _read_json(self, request: Request) -> Any:
        limit = self._config.limits.max_body_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise PayloadTooLarge(f"The request body is {declared} bytes; the limit is {limit} bytes.")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"The request body exceeds the limit of {limit} bytes.")
            chunks.append(chunk)
        data = json.loads(b"".join(chunks).decode("utf-8"))
        if _has_lone_surrogate(data):
            raise InvalidRequest("The request body holds a lone UTF-16 surrogate (\\ud800-\\udfff), which is not text.")
        return data

    def _count_tokens(self, name: str, body: Any, as_chat: bool) -> int:
        """Exact tokens under the model's own tokenizer; loaded on first use (runs in a worker thread)."""
        if name not in self._tokenizers:
            model = self._config.model(name)
            if model is None or model.role is not Role.CHAT:
                raise ValueError(f"no chat model {name!r}")
            path = model.serving_version.weights.local_path(self._config.resolved_weights_dir())
            self._tokenizers[name] = HFTokenizer(Path(path))
        return tokens_needed(self._tokenizers[name], body, as_chat)

    async def _probe(self, model: ModelConfig) -> bool:
        handle = self._handles[model.name][model.stable_version]
        try:
            return bool(await asyncio.wait_for(handle.ready.remote(), self._config.ingress.ready_probe_timeout_s))
        except Exception:
            return False
