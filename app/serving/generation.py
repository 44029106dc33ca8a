"""Chat and text completions: prompt -> token ids -> limits -> engine -> OpenAI response or SSE chunks."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass

from app.config import EngineKind
from app.engines.base import ChatEngine, GenerationDelta, SamplingSettings, Tokenizer
from app.errors import ContextLengthExceeded, ErrorInfo, InvalidRequest, OpenAIError, to_error_info
from app.protocol import (
    AssistantMessage,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatDelta,
    CompletionChoice,
    CompletionRequest,
    CompletionResponse,
    Usage,
)
from app.serving.capabilities import fields_beyond

GenerationRequest = ChatCompletionRequest | CompletionRequest


@dataclass(frozen=True)
class Prepared:
    request_id: str
    created: int
    prompt_ids: list[int]
    sampling: SamplingSettings
    adapter: str | None = None  # the request names a loaded LoRA adapter: generate with it


@dataclass(frozen=True)
class Limits:
    max_model_len: int
    max_output_tokens: int


def check_output_limit(request: GenerationRequest, limit: int) -> None:
    """The version's `max_output_tokens`: a request that asks for more is a 400 naming the field it used."""
    wanted = request.requested_max_tokens()
    if wanted is not None and wanted > limit:
        field = "max_completion_tokens" if getattr(request, "max_completion_tokens", None) else "max_tokens"
        raise InvalidRequest(
            f"{field} is too large: {wanted}. This model supports at most {limit} completion tokens.", param=field
        )


def sse(payload: str) -> str:
    return f"data: {payload}\n\n"


class GenerationService:
    """A request whose `model` is the name of one of the engine's loaded LoRA adapters is generated with that
    adapter and answered under its name (as vLLM's OpenAI server does); any other runs on the base model and is
    answered as `model`."""

    def __init__(
        self,
        *,
        model: str,
        tokenizer: Tokenizer,
        engine: ChatEngine,
        limits: Limits,
        clock: Callable[[], float] = time.time,
        new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
    ) -> None:
        self.model = model
        self._tokenizer = tokenizer
        self._engine = engine
        self._limits = limits
        self._clock = clock
        self._new_id = new_id

    async def prepare(self, request: GenerationRequest) -> Prepared:
        """Tokenize and check the request against the model's limits; raises an OpenAIError."""
        beyond = fields_beyond(EngineKind.TRANSFORMERS, request)
        if beyond:  # the planner keeps such requests away from this engine; a direct call is refused by name
            raise InvalidRequest(f"This engine does not serve {beyond}; vLLM versions do.", param=beyond[0])
        if isinstance(request, ChatCompletionRequest):
            prompt_ids = await asyncio.to_thread(self._tokenizer.render_chat, request.template_messages())
            prefix, where, param = "chatcmpl-", "messages", "messages"
        else:
            prompt_ids = await asyncio.to_thread(self._tokenizer.encode, request.prompt_text())
            prefix, where, param = "cmpl-", "prompt", "prompt"
        if not prompt_ids:
            raise InvalidRequest("The prompt is empty.", param=param)
        context, limit, used = self._limits.max_model_len, self._limits.max_output_tokens, len(prompt_ids)
        check_output_limit(request, limit)
        wanted = request.requested_max_tokens()
        if used >= context:
            raise ContextLengthExceeded(
                f"This model's maximum context length is {context} tokens. However, your {where} resulted in "
                f"{used} tokens. Please reduce the length of the {where}.",
                param=param,
            )
        max_tokens = wanted if wanted is not None else min(limit, context - used)
        if used + max_tokens > context:
            raise ContextLengthExceeded(
                f"This model's maximum context length is {context} tokens. However, you requested "
                f"{used + max_tokens} tokens ({used} in the {where}, {max_tokens} in the completion). "
                f"Please reduce the length of the {where} or completion.",
                param=param,
            )
        # top_p 0 keeps only the most likely token, which is greedy decoding; engines take top_p in (0, 1].
        greedy = request.temperature == 0.0 or request.top_p == 0.0
        sampling = SamplingSettings(
            max_tokens=max_tokens,
            temperature=0.0 if greedy else request.temperature,
            top_p=request.top_p or 1.0,
            seed=request.seed,
            stop=request.stop_sequences(),
            presence_penalty=request.presence_penalty,
            frequency_penalty=request.frequency_penalty,
        )
        adapter = request.model if request.model in self._engine.adapters else None
        return Prepared(prefix + self._new_id(), int(self._clock()), list(prompt_ids), sampling, adapter)

    async def create(self, request: GenerationRequest) -> ChatCompletionResponse | CompletionResponse | ErrorInfo:
        try:
            prepared = await self.prepare(request)
        except OpenAIError as exc:
            return exc.info()
        text: list[str] = []
        tokens = 0
        finish: GenerationDelta | None = None
        async with aclosing(self._generate(prepared)) as deltas:
            async for delta in deltas:
                text.append(delta.text)
                tokens += delta.num_tokens
                finish = delta
        reason = finish.finish_reason if finish and finish.finish_reason else "length"
        usage = _usage(len(prepared.prompt_ids), tokens)
        if isinstance(request, CompletionRequest) and request.echo:
            text.insert(0, request.prompt_text())
        if isinstance(request, ChatCompletionRequest):
            return ChatCompletionResponse(
                id=prepared.request_id,
                created=prepared.created,
                model=self._answering(prepared),
                choices=[ChatChoice(message=AssistantMessage(content="".join(text)), finish_reason=reason)],
                usage=usage,
            )
        return CompletionResponse(
            id=prepared.request_id,
            created=prepared.created,
            model=self._answering(prepared),
            choices=[CompletionChoice(text="".join(text), finish_reason=reason)],
            usage=usage,
        )

    async def stream(self, request: GenerationRequest) -> AsyncIterator[str | ErrorInfo]:
        """SSE events without the final `[DONE]` (the ingress adds it). The first event carries the engine's first
        token (with the chat role, or the echoed prompt), so an ErrorInfo first means nothing was generated and the
        request may be retried elsewhere; an ErrorInfo later is an error event inside the stream."""
        try:
            prepared = await self.prepare(request)
        except OpenAIError as exc:
            yield exc.info()
            return
        chunk = _ChunkShaper(request, prepared, self._answering(prepared))
        tokens = 0
        try:
            # aclosing: a consumer that stops early (client gone) closes the engine's generator now, which aborts
            # the engine request, instead of whenever the garbage collector gets to it.
            async with aclosing(self._generate(prepared)) as deltas:
                async for delta in deltas:
                    tokens += delta.num_tokens
                    if delta.text or delta.finish_reason:
                        yield sse(chunk.delta(delta))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            yield to_error_info(exc)
            return
        if request.include_usage:
            yield sse(chunk.usage(_usage(len(prepared.prompt_ids), tokens)))

    def _answering(self, prepared: Prepared) -> str:
        """The `model` of the answer: the adapter's name for an adapter request."""
        return prepared.adapter or self.model

    def _generate(self, prepared: Prepared) -> AsyncGenerator[GenerationDelta, None]:
        if prepared.sampling.max_tokens == 0:  # completions allow max_tokens 0; engines need at least 1
            return _nothing()
        return self._engine.generate(
            prepared.prompt_ids, prepared.sampling, prepared.request_id, adapter=prepared.adapter
        )


async def _nothing() -> AsyncGenerator[GenerationDelta, None]:
    yield GenerationDelta("", 0, "length")


class _ChunkShaper:
    """Builds the stream's JSON chunks in the shape the client asked for. The first chunk opens the answer: a chat
    stream's carries the assistant role, an echoing completion's the prompt."""

    def __init__(self, request: GenerationRequest, prepared: Prepared, model: str) -> None:
        self._is_chat = isinstance(request, ChatCompletionRequest)
        self._id, self._created, self._model = prepared.request_id, prepared.created, model
        self._opening = request.prompt_text() if isinstance(request, CompletionRequest) and request.echo else ""
        self._first = True

    def delta(self, delta: GenerationDelta) -> str:
        first, self._first = self._first, False
        if self._is_chat:
            opened = ChatDelta(role="assistant", content=delta.text) if first else ChatDelta(content=delta.text or None)
            chat = ChatChunkChoice.model_validate({"delta": opened, "finish_reason": delta.finish_reason})
            return ChatCompletionChunk(
                id=self._id, created=self._created, model=self._model, choices=[chat]
            ).model_dump_json()
        text = self._opening + delta.text if first else delta.text
        choice = CompletionChoice(text=text, finish_reason=delta.finish_reason)
        return CompletionResponse(
            id=self._id, created=self._created, model=self._model, choices=[choice]
        ).model_dump_json()

    def usage(self, usage: Usage) -> str:
        if self._is_chat:
            return ChatCompletionChunk(
                id=self._id, created=self._created, model=self._model, choices=[], usage=usage
            ).model_dump_json()
        return CompletionResponse(
            id=self._id, created=self._created, model=self._model, choices=[], usage=usage
        ).model_dump_json()


def _usage(prompt: int, completion: int) -> Usage:
    return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)
