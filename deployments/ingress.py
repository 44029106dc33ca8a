"""Ingress: the OpenAI HTTP surface. Parses and checks requests, picks the model version, makes one hop."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel
from ray import serve
from ray.serve.handle import DeploymentHandle, DeploymentResponseGenerator

from app.config import GraphConfig, ModelConfig, Role
from app.errors import ErrorInfo, ModelNotFound, ModelNotSupported, NotFound, PayloadTooLarge, to_error_info
from app.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    ModelCard,
    ModelList,
    ModelRequest,
    RerankRequest,
)
from deployments.errors import call, first_item, translate

RequestT = TypeVar("RequestT", bound=ModelRequest)
Handles = dict[str, dict[str, DeploymentHandle[Any]]]

logger = logging.getLogger("ray.serve")
api = FastAPI(title="inference-graph", description="OpenAI-compatible inference graph on Ray Serve.")


@api.exception_handler(404)
async def _not_found(request: Request, exc: Exception) -> JSONResponse:
    return error_response(NotFound(f"No route for {request.method} {request.url.path}.").info())


@api.exception_handler(405)
async def _bad_method(request: Request, exc: Exception) -> JSONResponse:
    info = ErrorInfo(
        status=405,
        message=f"Method {request.method} is not allowed on {request.url.path}.",
        type="invalid_request_error",
        code="method_not_allowed",
    )
    return error_response(info)


def error_response(info: ErrorInfo, headers: dict[str, str] | None = None) -> JSONResponse:
    extra = dict(headers or {})
    if info.status in (429, 503):
        extra.setdefault("retry-after", "1")
    return JSONResponse(status_code=info.status, content=info.body(), headers=extra)


def sse_error(info: ErrorInfo) -> str:
    return f"data: {json.dumps(info.body())}\n\n"


SSE_DONE = "data: [DONE]\n\n"


def _failure(exc: Exception) -> JSONResponse:
    info = to_error_info(translate(exc))
    if info.status >= 500:
        logger.error("request failed with %s", info.status, exc_info=exc)
    return error_response(info)


def _json(model: BaseModel, headers: dict[str, str] | None = None) -> Response:
    return Response(content=model.model_dump_json(), media_type="application/json", headers=headers)


def _result(result: BaseModel, served_by: str) -> Response:
    if isinstance(result, ErrorInfo):
        return error_response(result, {"x-served-by": served_by})
    return _json(result, {"x-served-by": served_by})


async def _sse(first: str, rest: DeploymentResponseGenerator[Any]) -> AsyncIterator[str]:
    """The replica's events, then `[DONE]`; a failure mid-stream becomes an error event before `[DONE]`.
    A client that goes away cancels this generator, and the `finally` cancels the replica's generation."""
    done = False
    try:
        yield first
        async for event in rest:
            if isinstance(event, ErrorInfo):
                yield sse_error(event)
                break
            yield event
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        yield sse_error(to_error_info(translate(exc)))
    else:
        done = True
    finally:
        if not done:
            rest.cancel()  # type: ignore[no-untyped-call]
    yield SSE_DONE


# Everything the routes call is defined above the class: @serve.ingress freezes the FastAPI app (a cloudpickle
# round trip) when the class is decorated, so a helper defined later in this module is missing in the replica.


@serve.deployment
@serve.ingress(api)
class Ingress:
    def __init__(self, config: GraphConfig, handles: Handles) -> None:
        self._config = config
        self._handles = handles
        self._created = int(time.time())

    # ---- endpoints ----------------------------------------------------------------------------------------

    @api.get("/health")
    async def health(self) -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/ready")
    async def ready(self) -> JSONResponse:
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
        return await self._generate(request, ChatCompletionRequest)

    @api.post("/v1/completions")
    async def completions(self, request: Request) -> Response:
        return await self._generate(request, CompletionRequest)

    @api.post("/v1/embeddings")
    async def embeddings(self, request: Request) -> Response:
        return await self._encode(request, EmbeddingRequest, Role.EMBEDDING, "embed")

    @api.post("/v1/rerank")
    async def rerank(self, request: Request) -> Response:
        return await self._encode(request, RerankRequest, Role.RERANK, "rerank")

    # ---- the one hop ----------------------------------------------------------------------------------------

    async def _generate(
        self, request: Request, schema: type[ChatCompletionRequest] | type[CompletionRequest]
    ) -> Response:
        try:
            body = await self._parse(request, schema)
            model = self._model(body.model, Role.CHAT)
            handle, served_by = self._target(model)
            timeout = self._config.limits.request_timeout_s
            if body.stream:
                stream: DeploymentResponseGenerator[Any] = handle.options(stream=True).stream.remote(body)  # type: ignore[assignment]
                first = await first_item(stream, timeout)
                if isinstance(first, ErrorInfo):
                    stream.cancel()  # type: ignore[no-untyped-call]
                    return error_response(first, {"x-served-by": served_by})
                return StreamingResponse(
                    _sse(first, stream), media_type="text/event-stream", headers={"x-served-by": served_by}
                )
            result = await call(handle.create.remote(body), timeout)
            return _result(result, served_by)
        except Exception as exc:
            return _failure(exc)

    async def _encode(self, request: Request, schema: type[RequestT], role: Role, method: str) -> Response:
        try:
            body = await self._parse(request, schema)
            model = self._model(body.model, role)
            handle, served_by = self._target(model)
            result = await call(getattr(handle, method).remote(body), self._config.limits.request_timeout_s)
            return _result(result, served_by)
        except Exception as exc:
            return _failure(exc)

    # ---- helpers ----------------------------------------------------------------------------------------------

    async def _parse(self, request: Request, schema: type[RequestT]) -> RequestT:
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
        data: Any = json.loads(b"".join(chunks).decode("utf-8"))
        return schema.model_validate(data)

    def _model(self, name: str, role: Role) -> ModelConfig:
        model = self._config.model(name)
        if model is None:
            raise ModelNotFound(f"The model '{name}' does not exist.", param="model")
        if model.role is not role:
            raise ModelNotSupported(
                f"The model '{name}' is a {model.role.value} model; this endpoint needs a {role.value} model.",
                param="model",
            )
        return model

    def _target(self, model: ModelConfig) -> tuple[DeploymentHandle[Any], str]:
        version = model.serving_version.version
        return self._handles[model.name][version], f"{model.name}@{version}"

    async def _probe(self, model: ModelConfig) -> bool:
        handle, _ = self._target(model)
        try:
            return bool(await asyncio.wait_for(handle.ready.remote(), self._config.ingress.ready_probe_timeout_s))
        except Exception:
            return False
