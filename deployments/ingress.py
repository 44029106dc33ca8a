"""Ingress: the OpenAI HTTP surface. Runs the policy pipeline in-process, then makes one hop (retried on failure)."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import BaseModel
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.types import Receive, Scope, Send

from app.config import EngineKind, GraphConfig, ModelConfig, Role
from app.errors import (
    ErrorInfo,
    InvalidRequest,
    NotFound,
    OpenAIError,
    PayloadTooLarge,
    to_error_info,
)
from app.guards.gate import Gate
from app.observability.observer import RequestObserver
from app.observability.record import CLIENT_GONE
from app.observability.request_log import RequestLog
from app.protocol import ModelCard, ModelList, ModelRequest
from app.serving.adapter_admin import RUNTIME_VERSION, LoadLoraAdapter, RuntimeAdapter, UnloadLoraAdapter, plan_load
from app.serving.adapters import configured_adapters
from app.tokenizer import HFTokenizer
from app.traffic.dispatch import Dispatched, Dispatcher, Refusal, Stream
from app.traffic.plan import Planner, tokens_needed
from app.traffic.rollout import Action
from app.traffic.router import OutcomeLog, VersionRouter
from deployments.errors import call, translate
from deployments.metrics import GraphMetrics
from deployments.upstream import Handles, ServeUpstream

logger = logging.getLogger("ray.serve")
CATCH_ALL = "/{path:path}"
BREAKER_POLL_S = 5.0  # breakers also change with time alone (open -> half-open): their states are read this often
READMIT_PROBE_S = 1.0  # how often a version set aside after losing a replica is probed for readiness
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


def _error_info(exc: Exception) -> ErrorInfo:
    info = to_error_info(translate(exc))
    if info.status >= 500:
        logger.error("request failed with %s", info.status, exc_info=exc)
    return info


def _json(model: BaseModel, headers: dict[str, str] | None = None) -> Response:
    return Response(content=model.model_dump_json(), media_type="application/json", headers=headers)


class GovernedStream(StreamingResponse):
    """A started stream's response: the request ends when its body does, or when the client leaves before the
    body began (then the events are never read, and only `end` can finish the request)."""

    def __init__(self, stream: Stream) -> None:
        super().__init__(stream.events, media_type="text/event-stream", headers=stream.headers)
        self._end = stream.end

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._end()


def _response(result: Dispatched) -> Response:
    if isinstance(result, Stream):
        return GovernedStream(result)
    if isinstance(result, Refusal):
        return error_response(result.info, result.headers)
    return Response(content=result.content, media_type="application/json", headers=result.headers)


# Everything the routes call is defined above the class: @serve.ingress freezes the FastAPI app (a cloudpickle
# round trip) when the class is decorated, so a helper defined later in this module is missing in the replica.


@serve.deployment
@serve.ingress(api)
class Ingress:
    def __init__(
        self,
        config: GraphConfig,
        handles: Handles,
        controller: DeploymentHandle[Any] | None,
        registry: DeploymentHandle[Any] | None = None,
    ) -> None:
        self._config = config
        self._registry = registry
        self._runtime: dict[str, RuntimeAdapter] = {}  # adapters loaded at run time, as this ingress serves them
        self._rng = random.Random()
        self._upstream = ServeUpstream(handles, config.ingress.grpc_handles, configured_adapters(config))
        self._controller = controller
        self._created = int(time.time())
        self._routers = {m.name: VersionRouter(m, time.monotonic, self._rng) for m in config.models}
        # every tokenizer the tiers count with, loaded before the replica reports ready (not by the first requests)
        self._tokenizers = {name: self._load_tokenizer(name) for name in {t.model for t in config.routing.tiers}}
        self._planner = Planner(config, self._count_tokens, lambda name: self._routers[name].can_serve())
        self._outcomes = OutcomeLog()
        self._syncer: asyncio.Task[None] | None = None
        self._metrics = GraphMetrics()
        logs = config.observability
        self._observer = RequestObserver(
            config, self._metrics, RequestLog(logs.resolved_request_log_path()) if logs.request_log else None
        )
        self._breaker_poll: asyncio.Task[None] | None = None
        self._readmitter: asyncio.Task[None] | None = None
        self._gate = Gate(config)
        self._dispatcher = Dispatcher(
            config, self._routers, self._gate, self._observer, self._metrics, self._outcomes, self._upstream
        )

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
    async def models(self, request: Request) -> Response:
        try:
            self._gate.caller(request.headers)
        except OpenAIError as exc:
            return error_response(exc.info())
        cards = [
            ModelCard(id=m.name, created=self._created, owned_by="inference-graph", parent=self._config.parent(m))
            for m in self._config.models
        ]
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
    @api.post("/v2/rerank")
    @api.post("/rerank")
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

    @api.post("/v1/load_lora_adapter")
    async def load_lora_adapter(self, request: Request) -> Response:
        """Serve a LoRA adapter as a model of its own, with no redeploy (vLLM's endpoint and body; admin key)."""
        try:
            self._gate.caller(request.headers, admin=True)
            if self._registry is None:
                raise NotFound("No version of this graph serves adapters (none sets lora).")
            body = LoadLoraAdapter.model_validate(await self._read_json(request))
            entry = plan_load(self._config, body, self._runtime)
            base, adapter = self._upstream.handle(entry.base_model, entry.base_version), entry.ref(self._config)
            failed = await call(base.options(multiplexed_model_id=adapter.name).load_adapter.remote(adapter), 300)
            if failed is not None:
                return error_response(failed)
            if not await call(self._registry.add.remote(entry), 10):
                raise InvalidRequest(f"The model '{entry.name}' already exists; unload it first.", param="lora_name")
        except Exception as exc:  # a body that does not validate is a 400 naming its field, as on every endpoint
            return error_response(_error_info(exc))
        self._install(entry)
        return PlainTextResponse(f"Success: LoRA adapter '{entry.name}' added successfully.")

    @api.post("/v1/unload_lora_adapter")
    async def unload_lora_adapter(self, request: Request) -> Response:
        """Stop serving an adapter loaded at run time; replicas that hold it drop it as they load others."""
        try:
            self._gate.caller(request.headers, admin=True)
            body = UnloadLoraAdapter.model_validate(await self._read_json(request))
            if body.lora_name not in self._runtime and self._config.model(body.lora_name) is not None:
                raise InvalidRequest(
                    f"The model '{body.lora_name}' is in the serve config; remove it there.", param="lora_name"
                )
            removed = self._registry is not None and await call(self._registry.remove.remote(body.lora_name), 10)
            if not removed:
                raise NotFound(f"The LoRA adapter '{body.lora_name}' cannot be found.", param="lora_name")
        except Exception as exc:  # a body that does not validate is a 400 naming its field, as on every endpoint
            return error_response(_error_info(exc))
        self._uninstall(body.lora_name)
        return PlainTextResponse(f"Success: LoRA adapter '{body.lora_name}' removed successfully.")

    @api.post(CATCH_ALL)
    async def rewritten(self, request: Request) -> Response:
        """Paths that exist only before a rewrite rule (e.g. a legacy prefix); unmatched ones get a 404."""
        return await self._serve(request)

    # ---- the pipeline; the dispatcher makes the one hop --------------------------------------------------------

    async def _serve(self, request: Request) -> Response:
        self._ensure_syncing()
        path = _app_path(request)
        record = self._observer.begin(path, request.headers)
        try:
            caller = self._gate.caller(request.headers)
            data = await self._read_json(request)
            plan = await asyncio.to_thread(self._planner.plan, path, request.headers, data)
            priority = self._gate.priority(plan.headers)  # as the rewrite rules left the headers
            asked = data.get("model") if isinstance(data, dict) else None
            self._observer.planned(record, plan, request.headers, asked)
            with self._observer.active(record):
                response = _response(await self._dispatcher.dispatch(plan, record, caller, priority))
        except asyncio.CancelledError:  # the client left before the answer
            record.status = CLIENT_GONE
            self._observer.finish(record)
            raise
        except Exception as exc:
            info = _error_info(exc)
            record.fail(info)
            response = error_response(info)
        if isinstance(response, GovernedStream):
            return response  # the request ends with the stream
        response.headers.update(self._observer.finish(record))
        return response

    # ---- rollout sync -------------------------------------------------------------------------------------

    def _ensure_syncing(self) -> None:
        syncs = self._controller is not None or self._registry is not None
        if syncs and (self._syncer is None or self._syncer.done()):
            self._syncer = asyncio.get_running_loop().create_task(self._sync_forever())
        if self._breaker_poll is None or self._breaker_poll.done():
            self._breaker_poll = asyncio.get_running_loop().create_task(self._poll_breakers_forever())
        if self._readmitter is None or self._readmitter.done():
            self._readmitter = asyncio.get_running_loop().create_task(self._readmit_forever())

    async def _poll_breakers_forever(self) -> None:
        while True:
            for name, router in self._routers.items():
                self._metrics.breakers(name, router.breaker_states())
            await asyncio.sleep(BREAKER_POLL_S)

    async def _readmit_forever(self) -> None:
        """Versions set aside after losing a replica take traffic again once one of their replicas answers `ready`
        (a probe, not a client's request, waits for Serve to start the replacement)."""
        while True:
            waiting = [(name, v) for name, router in self._routers.items() for v in router.set_aside]
            answers = await asyncio.gather(*(self._ready(self._upstream.handle(*key)) for key in waiting))
            for (name, version), ready in zip(waiting, answers, strict=True):
                if ready and name in self._routers:
                    self._routers[name].readmit(version)
            await asyncio.sleep(READMIT_PROBE_S)

    async def _sync_forever(self) -> None:
        while True:
            try:
                await self._sync()
            except Exception as exc:  # the controller restarting must not stop the loop
                logger.warning("rollout sync failed: %s", exc)
            await asyncio.sleep(self._config.routing.sync_interval_s)

    async def _sync(self) -> None:
        if self._registry is not None:
            entries: list[RuntimeAdapter] = await call(self._registry.entries.remote(), 5)
            for name in set(self._runtime) - {e.name for e in entries}:
                self._uninstall(name)
            for entry in entries:
                if entry.name not in self._runtime:
                    self._install(entry)
        if self._controller is None:
            return
        weights = await call(self._controller.sync.remote(self._outcomes.drain()), 5)
        for name, shares in weights.items():
            self._routers[name].set_weights(shares)

    def _install(self, entry: RuntimeAdapter) -> None:
        """Serve a runtime adapter here: its model in the config the pipeline reads, its router and its hop."""
        if entry.name in self._runtime:
            return
        model, adapter = entry.model(self._config), entry.ref(self._config)
        self._runtime[entry.name] = entry
        self._config.models.append(model)
        self._routers[entry.name] = VersionRouter(model, time.monotonic, self._rng)
        self._upstream.add_adapter(entry.name, RUNTIME_VERSION, adapter, (entry.base_model, entry.base_version))

    def _uninstall(self, name: str) -> None:
        if self._runtime.pop(name, None) is None:
            return
        self._config.models[:] = [m for m in self._config.models if m.name != name]
        self._routers.pop(name, None)
        self._upstream.remove_model(name)

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

    def _load_tokenizer(self, name: str) -> HFTokenizer:
        model = self._config.model(name)
        if model is None or model.role is not Role.CHAT:
            raise ValueError(f"routing.tiers names {name!r}, which is not a chat model")
        version = model.serving_version
        template = version.vllm.chat_template_path() if version.engine is EngineKind.VLLM else None
        return HFTokenizer(
            Path(version.weights.local_path(self._config.resolved_weights_dir())),
            chat_template=template.read_text() if template is not None else None,
        )

    def _count_tokens(self, name: str, body: ModelRequest) -> int:
        """Exact tokens under a tier model's own tokenizer (runs in a worker thread)."""
        return tokens_needed(self._tokenizers[name], body)

    async def _probe(self, model: ModelConfig) -> bool:
        return await self._ready(self._upstream.handle(model.name, model.stable_version))

    async def _ready(self, handle: DeploymentHandle[Any]) -> bool:
        try:
            return bool(await asyncio.wait_for(handle.ready.remote(), self._config.ingress.ready_probe_timeout_s))
        except Exception:
            return False
