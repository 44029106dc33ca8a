"""Chat on vLLM through vLLM's own OpenAI layer: the replica builds vLLM's serving objects over its in-process
`AsyncLLM` (vLLM's `init_app_state`, from the same flags `vllm serve` parses), so a vLLM version serves what
vLLM's own server serves for the model: tools, structured outputs, logprobs, `n`, vLLM's sampling parameters.
The engine's `generate` is wrapped to count the replica's requests and to meter each one (time, tokens)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from pathlib import Path
from typing import Any

from app.config import LoraConfig, VllmOptions
from app.engines.base import EngineStats, FinishReason
from app.errors import (
    ContextLengthExceeded,
    ErrorInfo,
    InvalidRequest,
    OpenAIError,
    ServiceUnavailable,
    to_error_info,
)
from app.observability.metering import current_meter
from app.protocol import ChatCompletionRequest, CompletionRequest, EngineAnswer
from app.serving.generation import check_output_limit

GenerationRequest = ChatCompletionRequest | CompletionRequest
_DONE = "data: [DONE]\n\n"
_ERROR = 'data: {"error"'


def cpu_environment(kv_cache_space_gb: int) -> dict[str, str]:
    """Environment a CPU replica needs before vLLM is imported (set through the replica's runtime_env)."""
    return {
        "VLLM_CPU_KVCACHE_SPACE": str(kv_cache_space_gb),
        "VLLM_WORKER_MULTIPROC_METHOD": "spawn",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }


def vllm_argv(
    path: Path,
    served_name: str,
    options: VllmOptions,
    *,
    max_model_len: int,
    gpu_memory_utilization: float,
    chat_template: Path | None,
    lora: LoraConfig | None = None,
    seed: int = 0,
) -> list[str]:
    """The `vllm serve` flags a version's settings mean; vLLM's own parser reads them."""
    argv = [
        "--model", str(path),
        "--served-model-name", served_name,
        "--max-model-len", str(max_model_len),
        "--dtype", options.dtype,
        "--gpu-memory-utilization", str(gpu_memory_utilization),
        "--tensor-parallel-size", str(options.tensor_parallel_size),
        "--seed", str(seed),
        "--disable-log-stats",
        "--tool-strict-level", options.tool_strict_level,
    ]  # fmt: skip
    if options.enforce_eager:
        argv.append("--enforce-eager")
    if options.tensor_parallel_size > 1:  # vLLM's workers run as Ray actors in the replica's placement group
        argv += ["--distributed-executor-backend", "ray"]
    if chat_template is not None:
        argv += ["--chat-template", str(chat_template)]
    if options.tool_call_parser is not None:
        argv += ["--tool-call-parser", options.tool_call_parser]
    if options.enable_auto_tool_choice:
        argv.append("--enable-auto-tool-choice")
    if options.reasoning_parser is not None:
        argv += ["--reasoning-parser", options.reasoning_parser]
    if options.stream_interval > 1:
        argv += ["--stream-interval", str(options.stream_interval)]
    if lora is not None:  # as many adapters on the device as the replica holds, so none waits for a slot
        argv += ["--enable-lora", "--max-lora-rank", str(lora.max_rank)]
        argv += ["--max-loras", str(lora.max_adapters), "--max-cpu-loras", str(lora.max_adapters)]
    return argv


def finish_reason(finished: bool, reason: str | None) -> FinishReason | None:
    """OpenAI's finish reason for a vLLM output. vLLM also finishes a request it aborted (`abort`) or could not
    serve (`error`); that answer is cut short, so it is a failure (503, retried where nothing was sent yet), never
    a `stop`."""
    if not finished:
        return None
    if reason in ("stop", "length", "tool_calls"):
        return reason  # type: ignore[return-value]
    raise ServiceUnavailable(f"The engine ended the request early (finish reason {reason!r}); retry shortly.")


def prefix_cache_logger(report: Callable[[int, int], None]) -> Any:
    """A vLLM stat logger that hands each update's prefix-cache lookups (tokens queried, tokens hit) to `report`.
    With it, vLLM collects its statistics but keeps its default loggers off (`disable_log_stats`)."""
    from vllm.v1.metrics.loggers import StatLoggerBase

    class PrefixCacheLogger(StatLoggerBase):
        def __init__(self, vllm_config: Any, engine_index: int = 0) -> None:
            pass

        def record(
            self, scheduler_stats: Any, iteration_stats: Any, mm_cache_stats: Any = None, engine_idx: int = 0
        ) -> None:
            stats = getattr(scheduler_stats, "prefix_cache_stats", None)
            if stats is not None and stats.queries:
                report(int(stats.queries), int(stats.hits))

        def log_engine_initialized(self) -> None:
            pass

    return PrefixCacheLogger


class VllmChat:
    """A vLLM version's replica engine and server in one: `create` and `stream` answer as vLLM's OpenAI server
    does; `stats` counts the engine's requests."""

    def __init__(self, engine: Any, state: Any, max_output_tokens: int) -> None:
        from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest as VllmChatRequest
        from vllm.entrypoints.openai.completion.protocol import CompletionRequest as VllmCompletionRequest

        self._engine = engine
        self._chat, self._completion = state.openai_serving_chat, state.openai_serving_completion
        self._models = state.openai_serving_models
        self._chat_request, self._completion_request = VllmChatRequest, VllmCompletionRequest
        self.stats = EngineStats()
        self._max_output_tokens = max_output_tokens
        self._generate = engine.generate
        engine.generate = self._metered_generate  # the OpenAI layer calls the engine through this

    @classmethod
    async def start(
        cls, argv: list[str], max_output_tokens: int, prefix_cache: Callable[[int, int], None] | None = None
    ) -> VllmChat:
        """`max_output_tokens`: the version's limit on what a request may ask (vLLM's own bound is the context)."""
        from starlette.datastructures import State
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.entrypoints.launchers.api_server.app_state import init_app_state
        from vllm.entrypoints.launchers.cli_args import make_arg_parser
        from vllm.utils.argparse_utils import FlexibleArgumentParser
        from vllm.v1.engine.async_llm import AsyncLLM

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        args = make_arg_parser(FlexibleArgumentParser()).parse_args(argv)  # type: ignore[no-untyped-call]
        loggers = [prefix_cache_logger(prefix_cache)] if prefix_cache is not None else None
        engine = AsyncLLM.from_engine_args(AsyncEngineArgs.from_cli_args(args), stat_loggers=loggers)
        state = State()
        await init_app_state(engine, state, args, supported_tasks=await engine.get_supported_tasks())
        return cls(engine, state, max_output_tokens)

    async def create(self, request: GenerationRequest) -> EngineAnswer | ErrorInfo:
        try:
            result = await self._serve(request)
        except Exception as exc:
            return self._error(exc, request)
        if hasattr(result, "__aiter__"):  # not asked for, so never expected
            raise TypeError("vLLM answered a unary request with a stream")
        if _is_error(result):
            return _error_info(result.error, request)
        return EngineAnswer.model_validate(result.model_dump(mode="json"))

    async def stream(self, request: GenerationRequest) -> AsyncIterator[str | ErrorInfo]:
        """vLLM's SSE events without the final `[DONE]` (the ingress adds it). vLLM opens a chat stream with a
        role-only chunk per choice; those go out with the first chunk that carries output, so the first event
        carries the first token and an ErrorInfo first means nothing was generated (the request may be retried)."""
        try:
            result = await self._serve(request)
        except Exception as exc:
            yield self._error(exc, request)
            return
        if _is_error(result):
            yield _error_info(result.error, request)
            return
        async for event in relayed(result):
            yield event

    async def _serve(self, request: GenerationRequest) -> Any:
        check_output_limit(request, self._max_output_tokens)
        if isinstance(request, ChatCompletionRequest):
            chat = self._chat_request.model_validate(_fields(request, self._chat_request))
            return await self._chat.create_chat_completion(chat, None)
        completion = self._completion_request.model_validate(_fields(request, self._completion_request))
        return await self._completion.create_completion(completion, None)

    def _error(self, exc: Exception, request: GenerationRequest) -> ErrorInfo:
        from vllm.entrypoints.serve.exception_handling.error_response import create_error_response
        from vllm.exceptions import GenerationError, VLLMError
        from vllm.v1.engine.exceptions import EngineDeadError

        if isinstance(exc, GenerationError | EngineDeadError):
            return ServiceUnavailable(f"The engine could not finish the request ({exc}); retry shortly.").info()
        if isinstance(exc, OpenAIError) or not isinstance(exc, VLLMError | ValueError | TypeError):
            return to_error_info(exc)
        return _error_info(create_error_response(exc).error, request)

    async def _metered_generate(self, prompt: Any, params: Any, request_id: str, *args: Any, **kwargs: Any) -> Any:
        """The engine's `generate`, counting the request and adding its time and tokens to the request's meter."""
        meter, outputs = current_meter(), self._generate(prompt, params, request_id, *args, **kwargs)
        try:
            with self.stats.counting():
                while True:
                    started = time.perf_counter()
                    try:
                        out = await anext(outputs)
                    except StopAsyncIteration:
                        return
                    finally:
                        if meter is not None:
                            meter.engine_time(time.perf_counter() - started)
                    if meter is not None:
                        if out.prompt_token_ids is not None:
                            meter.prompt_tokens = len(out.prompt_token_ids)
                        meter.tokens(sum(len(o.token_ids) for o in out.outputs))
                    for o in out.outputs:
                        finish_reason(o.finish_reason is not None, o.finish_reason)
                    yield out
        except BaseException:  # vLLM aborts its own request when generate() is cancelled; abort again for other exits
            await outputs.aclose()
            await self._engine.abort(request_id)
            raise

    async def load_adapter(self, name: str, path: str) -> None:
        """Load a LoRA adapter as vLLM's `/v1/load_lora_adapter` does; requests whose model is `name` then use it."""
        from vllm.entrypoints.serve.lora.protocol import LoadLoRAAdapterRequest

        loading = LoadLoRAAdapterRequest(lora_name=name, lora_path=path)
        result = await self._models.load_lora_adapter(loading, base_model_name=self._models.model_name())
        if _is_error(result):
            raise InvalidRequest(f"The adapter '{name}' could not be loaded: {result.error.message}", param="model")

    async def unload_adapter(self, name: str) -> None:
        """Forget the adapter's name (as `/v1/unload_lora_adapter` does) and free its slot in the engine."""
        from vllm.entrypoints.serve.lora.protocol import UnloadLoRAAdapterRequest

        loaded = self._models.lora_requests.get(name)
        if loaded is None:
            return
        await self._models.unload_lora_adapter(UnloadLoRAAdapterRequest(lora_name=name))
        await self._engine.remove_lora(loaded.lora_int_id)

    def check_health(self) -> None:
        if self._engine.errored:
            raise RuntimeError(f"vLLM engine is dead: {self._engine.dead_error}")

    def shutdown(self) -> None:
        self._engine.shutdown()


async def relayed(events: AsyncGenerator[str, None]) -> AsyncIterator[str | ErrorInfo]:
    """vLLM's SSE events as the replica streams them: the opening role-only chunks merged into the first event with
    output, an error event as an ErrorInfo (the stream ends there), and no `[DONE]`."""
    opening: list[str] = []
    opened = False
    async with aclosing(events) as source:
        async for event in source:
            if event.startswith(_ERROR):
                yield _stream_error(event)
                return
            if event == _DONE:
                break
            if not opened and _only_opens(event):
                opening.append(event)
                continue
            if not opened:
                event, opened = "".join(opening) + event, True
            yield event
    if not opened and opening:
        yield "".join(opening)


def _fields(request: GenerationRequest, vllm_model: type[Any]) -> dict[str, Any]:
    """What the client set, for the vLLM request model (spec-only hints such as `metadata` are not vLLM's)."""
    body = request.model_dump(mode="json", by_alias=True, exclude_unset=True)
    body["model"] = request.model
    return {name: value for name, value in body.items() if name in vllm_model.model_fields}


def _only_opens(event: str) -> bool:
    """A chat chunk that only opens a choice (its role, no output yet)."""
    chunk = json.loads(event.removeprefix("data: "))
    choices = chunk.get("choices") or []
    return bool(choices) and all(
        not (c.get("delta") or {}).get("content")
        and not (c.get("delta") or {}).get("tool_calls")
        and not (c.get("delta") or {}).get("reasoning")
        and c.get("finish_reason") is None
        for c in choices
    )


def _is_error(result: Any) -> bool:
    return type(result).__name__ == "ErrorResponse"


def _error_info(error: Any, request: GenerationRequest) -> ErrorInfo:
    """vLLM's error in the graph's terms; a prompt over the context is OpenAI's `context_length_exceeded` on the
    field that holds the prompt, as the transformers engine answers it."""
    status = int(error.code)
    if status == 400 and "maximum context length" in error.message:
        where = "messages" if isinstance(request, ChatCompletionRequest) else "prompt"
        return ContextLengthExceeded(error.message, param=where).info()
    return _info(status, error.message, error.param)


def _stream_error(event: str) -> ErrorInfo:
    error = json.loads(event.removeprefix("data: "))["error"]
    return _info(int(error.get("code") or 500), error.get("message", ""), error.get("param"))


def _info(status: int, message: str, param: str | None) -> ErrorInfo:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return ErrorInfo(status=status, message=message, type=kind, param=param)
