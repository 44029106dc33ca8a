import itertools
import json
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import pytest

from app.config import LoraConfig, VllmOptions
from app.engines.vllm_chat import finish_reason, relayed, vllm_argv
from app.errors import ErrorInfo, ServiceUnavailable


def test_open_outputs_have_no_finish_reason() -> None:
    assert finish_reason(False, None) is None


@pytest.mark.parametrize("reason", ["stop", "length", "tool_calls"])
def test_stop_length_and_tool_calls_pass_through(reason: str) -> None:
    assert finish_reason(True, reason) == reason


@pytest.mark.parametrize("reason", ["abort", "error", None])
def test_an_aborted_or_failed_request_is_a_503_not_a_stop(reason: str | None) -> None:
    with pytest.raises(ServiceUnavailable, match="ended the request early"):
        finish_reason(True, reason)


def test_the_flags_are_vllm_serves_own() -> None:
    options = VllmOptions(
        chat_template="chat_templates/smollm2-tools.jinja", tool_call_parser="hermes", enable_auto_tool_choice=True
    )
    argv = vllm_argv(
        Path("/w"), "m", options, max_model_len=2048, gpu_memory_utilization=0.9, chat_template=Path("/t.jinja")
    )
    pairs = dict(itertools.pairwise(argv))
    assert pairs["--model"] == "/w" and pairs["--served-model-name"] == "m" and pairs["--max-model-len"] == "2048"
    assert pairs["--tool-call-parser"] == "hermes" and pairs["--chat-template"] == "/t.jinja"
    assert pairs["--tool-strict-level"] == "parameter"  # vLLM's own default, auto, leaves arguments unchecked
    assert "--enable-auto-tool-choice" in argv and "--enforce-eager" in argv
    assert "--distributed-executor-backend" not in argv
    plain = vllm_argv(Path("/w"), "m", VllmOptions(), max_model_len=64, gpu_memory_utilization=0.5, chat_template=None)
    assert "--tool-call-parser" not in plain and "--chat-template" not in plain and "--stream-interval" not in plain
    assert "--enable-lora" not in plain


def test_lora_asks_vllm_for_as_many_adapter_slots_as_the_replica_holds() -> None:
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    lora = LoraConfig(max_adapters=5, max_rank=32)
    argv = vllm_argv(
        Path("/w"), "m", VllmOptions(), max_model_len=64, gpu_memory_utilization=0.5, chat_template=None, lora=lora
    )
    args = make_arg_parser(FlexibleArgumentParser()).parse_args(argv)
    assert (args.enable_lora, args.max_lora_rank, args.max_loras, args.max_cpu_loras) == (True, 32, 5, 5)


def test_the_flags_parse_with_vllms_own_parser() -> None:
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    options = VllmOptions(
        tool_call_parser="hermes", enable_auto_tool_choice=True, tensor_parallel_size=2, stream_interval=4
    )
    argv = vllm_argv(Path("/w"), "m", options, max_model_len=256, gpu_memory_utilization=0.4, chat_template=None)
    args = make_arg_parser(FlexibleArgumentParser()).parse_args(argv)
    assert args.stream_interval == 4
    assert (args.model, args.served_model_name, args.max_model_len) == ("/w", ["m"], 256)
    assert (args.tool_call_parser, args.enable_auto_tool_choice) == ("hermes", True)
    assert args.tool_strict_level == "parameter"
    assert (args.tensor_parallel_size, args.distributed_executor_backend) == (2, "ray")


def event(**chunk: object) -> str:
    return f"data: {json.dumps(chunk)}\n\n"


OPEN = event(choices=[{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
TOKEN = event(choices=[{"index": 0, "delta": {"content": "Paris"}, "finish_reason": None}])
LAST = event(choices=[{"index": 0, "delta": {"content": "."}, "finish_reason": "stop"}])


async def events(*items: str) -> AsyncGenerator[str, None]:
    for item in items:
        yield item


async def test_the_opening_chunks_go_out_with_the_first_token_and_done_is_dropped() -> None:
    second_open = OPEN.replace('"index": 0', '"index": 1')
    out = [e async for e in relayed(events(OPEN, second_open, TOKEN, LAST, "data: [DONE]\n\n"))]
    assert out == [OPEN + second_open + TOKEN, LAST]


async def test_an_error_event_is_an_error_info_and_ends_the_stream() -> None:
    error = event(error={"message": "boom", "type": "InternalServerError", "param": None, "code": 503})
    out = [e async for e in relayed(events(OPEN, error, TOKEN))]
    assert len(out) == 1 and isinstance(out[0], ErrorInfo)
    assert (out[0].status, out[0].message, out[0].type) == (503, "boom", "server_error")


async def test_a_stream_of_only_openings_is_still_sent() -> None:
    assert [e async for e in relayed(events(OPEN, "data: [DONE]\n\n"))] == [OPEN]


async def test_a_tool_call_delta_is_output() -> None:
    call = event(choices=[{"index": 0, "delta": {"tool_calls": [{"index": 0}]}, "finish_reason": None}])
    assert [e async for e in relayed(events(OPEN, call))] == [OPEN + call]


def test_vllms_context_error_is_context_length_exceeded_on_the_prompt_field() -> None:
    from types import SimpleNamespace

    from app.engines.vllm_chat import _error_info
    from app.protocol import ChatCompletionRequest, CompletionRequest

    error = SimpleNamespace(
        code=400, message="This model's maximum context length is 2048 tokens. However, ...", param="input_tokens"
    )
    chat = ChatCompletionRequest.model_validate({"model": "m", "messages": [{"role": "user", "content": "x"}]})
    info = _error_info(error, chat)
    assert (info.status, info.code, info.param) == (400, "context_length_exceeded", "messages")
    assert _error_info(error, CompletionRequest(model="m", prompt="x")).param == "prompt"
    other = _error_info(SimpleNamespace(code=400, message="bad top_k", param="top_k"), chat)
    assert (other.code, other.param, other.type) == (None, "top_k", "invalid_request_error")


class FakeAsyncLLM:
    """vLLM's AsyncLLM as VllmChat uses it: `generate` yields the given outputs; `abort` is recorded."""

    def __init__(self, *finish_reasons: str | None) -> None:
        self.finish_reasons = finish_reasons
        self.aborted: list[str] = []
        self.closed = False

    async def generate(self, prompt: object, params: object, request_id: str) -> AsyncGenerator[object, None]:
        from types import SimpleNamespace

        try:
            for reason in self.finish_reasons:
                yield SimpleNamespace(
                    prompt_token_ids=[1, 2, 3], outputs=[SimpleNamespace(token_ids=[7, 8], finish_reason=reason)]
                )
        finally:
            self.closed = True

    async def abort(self, request_id: str) -> None:
        self.aborted.append(request_id)


def vllm_chat(engine: FakeAsyncLLM) -> object:
    """The VllmChat over `engine`; its `generate` is now the counted, metered wrapper."""
    from types import SimpleNamespace

    from app.engines.vllm_chat import VllmChat

    state = SimpleNamespace(openai_serving_chat=None, openai_serving_completion=None, openai_serving_models=None)
    return VllmChat(engine, state, 16)


async def test_a_request_read_to_its_end_is_finished_and_metered() -> None:
    from app.observability.metering import metering

    engine = FakeAsyncLLM(None, "stop")
    chat: Any = vllm_chat(engine)
    with metering() as meter:
        outputs = [out async for out in engine.generate("p", None, "r1")]  # type: ignore[attr-defined]
    assert len(outputs) == 2 and (meter.prompt_tokens, meter.completion_tokens) == (3, 4)
    assert (chat.stats.finished, chat.stats.aborted, chat.stats.running) == (1, 0, 0)
    assert engine.aborted == []


async def test_a_request_closed_early_is_aborted_in_the_engine() -> None:
    engine = FakeAsyncLLM(None, None, "stop")
    chat: Any = vllm_chat(engine)
    outputs = engine.generate("p", None, "r1")  # type: ignore[attr-defined]
    await anext(outputs)
    await outputs.aclose()
    assert (chat.stats.finished, chat.stats.aborted, chat.stats.running) == (0, 1, 0)
    assert engine.aborted == ["r1"] and engine.closed


async def test_a_request_vllm_ended_early_is_a_503_and_aborted() -> None:
    engine = FakeAsyncLLM("abort")
    chat: Any = vllm_chat(engine)
    with pytest.raises(ServiceUnavailable):
        _ = [out async for out in engine.generate("p", None, "r1")]  # type: ignore[attr-defined]
    assert (chat.stats.finished, chat.stats.aborted) == (0, 1) and engine.aborted == ["r1"]
