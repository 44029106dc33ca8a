"""A no-op chat engine: the serving layer's real work (parse, tokenize, shape the response) around an engine that
answers at once. Served two ways for benchmark 2: through the graph (the product's Ingress bound to `NoopChat`
replicas) and by a plain FastAPI app that calls the same service in-process."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from ray import serve

from app.config import ModelConfig, ModelVersion
from app.engines.base import ChatEngine, EngineStats, FinishReason, GenerationDelta, SamplingSettings
from app.errors import ErrorInfo, to_error_info
from app.observability.metering import MeteredChatEngine
from app.protocol import ChatCompletionRequest
from app.serving.generation import GenerationService, Limits
from deployments.chat_model import ChatModel
from deployments.replica import serve_model_replica

NOOP_TOKENS = 16  # deltas per answer, unless max_tokens asks for fewer
NOOP_CONTEXT = 4096


class WordTokenizer:
    """One token per whitespace-separated word; the chat "template" is the messages' words in order."""

    def encode(self, text: str) -> list[int]:
        return [hash(word) & 0xFFFF for word in text.split()]

    def render_chat(
        self, messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]] | None = None
    ) -> list[int]:
        return [1] + [i for m in messages for i in self.encode(f"{m['role']}: {m['content']}")]


class NoopEngine:
    """Implements app.engines.base.ChatEngine: yields `ok` per token, with no model behind it."""

    def __init__(self, tokens: int = NOOP_TOKENS) -> None:
        self.stats = EngineStats()
        self.adapters: frozenset[str] = frozenset()
        self._tokens = tokens

    async def generate(
        self,
        prompt_ids: Sequence[int],
        sampling: SamplingSettings,
        request_id: str,
        *,
        adapter: str | None = None,
    ) -> AsyncGenerator[GenerationDelta, None]:
        with self.stats.counting():
            count = min(self._tokens, sampling.max_tokens)
            reason: FinishReason = "length" if count == sampling.max_tokens else "stop"
            for i in range(count):
                yield GenerationDelta(" ok", 1, reason if i == count - 1 else None)

    def check_health(self) -> None:
        return None


def noop_service(model: str, engine: ChatEngine | None = None) -> GenerationService:
    return GenerationService(
        model=model,
        tokenizer=WordTokenizer(),
        engine=engine or NoopEngine(),
        limits=Limits(max_model_len=NOOP_CONTEXT, max_output_tokens=NOOP_CONTEXT // 2),
    )


@serve.deployment
class NoopChat(ChatModel.func_or_class):  # type: ignore[misc,name-defined]
    """The product's chat replica (its `create`, `stream` and `ready`: the contract the Ingress calls, metering
    included) around the no-op engine instead of a model."""

    def __init__(self, model: ModelConfig, version: ModelVersion) -> None:
        self.engine = NoopEngine()
        self.service = noop_service(model.name, MeteredChatEngine(self.engine))
        self._replica = serve_model_replica(model, version)


def plain_app(model: str) -> FastAPI:
    """The same no-op service behind FastAPI alone: what the graph is measured against."""
    app = FastAPI()
    service = noop_service(model)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        try:  # parsed as the ingress parses it
            body = ChatCompletionRequest.model_validate(json.loads(await request.body()))
        except Exception as exc:
            info = to_error_info(exc)
            return JSONResponse(status_code=info.status, content=info.body())
        if body.stream:
            return StreamingResponse(_sse(service.stream(body)), media_type="text/event-stream")
        result = await service.create(body)
        if isinstance(result, ErrorInfo):
            return JSONResponse(status_code=result.status, content=result.body())
        return Response(content=result.model_dump_json(), media_type="application/json")

    return app


async def _sse(events: AsyncIterator[str | ErrorInfo]) -> AsyncIterator[str]:
    async for event in events:
        if isinstance(event, ErrorInfo):
            yield f"data: {json.dumps(event.body())}\n\n"
            break
        yield event
    yield "data: [DONE]\n\n"
