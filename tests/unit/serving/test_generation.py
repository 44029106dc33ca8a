import json
import time

import pytest

from app.errors import ErrorInfo
from app.protocol import ChatCompletionRequest, ChatCompletionResponse, CompletionRequest, CompletionResponse
from app.serving.generation import GenerationService, Limits
from tests.fakes import CharTokenizer, ScriptedEngine


def service(engine: ScriptedEngine | None = None, context: int = 200, output: int = 100) -> GenerationService:
    return GenerationService(
        model="m",
        tokenizer=CharTokenizer(),
        engine=engine or ScriptedEngine(),
        limits=Limits(max_model_len=context, max_output_tokens=output),
        clock=lambda: 1234.0,
        new_id=lambda: "x",
    )


def chat(content: str = "hi", **fields: object) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": content}], **fields}
    )


async def test_chat_response_and_usage_from_real_counts() -> None:
    engine = ScriptedEngine("Paris is the capital")
    result = await service(engine).create(chat("hi", max_tokens=2))
    assert isinstance(result, ChatCompletionResponse)
    assert result.choices[0].message.content == "Paris is"
    assert result.choices[0].finish_reason == "length"
    prompt_len = len("user: hi\nassistant: ")
    assert (result.usage.prompt_tokens, result.usage.completion_tokens, result.usage.total_tokens) == (
        prompt_len,
        2,
        prompt_len + 2,
    )
    assert (result.id, result.created, result.model) == ("chatcmpl-x", 1234, "m")
    assert engine.seen[0][1].max_tokens == 2


async def test_default_max_tokens_fills_the_context() -> None:
    engine = ScriptedEngine()
    await service(engine, context=50, output=100).create(chat("hi"))
    assert engine.seen[0][1].max_tokens == 50 - len("user: hi\nassistant: ")


async def test_completion_finishes_with_stop() -> None:
    result = await service().create(CompletionRequest(model="m", prompt="say", max_tokens=10))
    assert isinstance(result, CompletionResponse)
    assert result.choices[0].text == "Paris is the capital"
    assert result.choices[0].finish_reason == "stop"
    assert result.usage is not None and result.usage.prompt_tokens == 3


async def test_context_length_exceeded_names_both_numbers() -> None:
    result = await service(context=30).create(chat("x" * 40))
    assert isinstance(result, ErrorInfo)
    assert (result.status, result.code, result.param) == (400, "context_length_exceeded", "messages")
    assert "30 tokens" in result.message and "58 tokens" in result.message

    result = await service(context=30, output=30).create(chat("hi", max_tokens=20))
    assert isinstance(result, ErrorInfo) and result.code == "context_length_exceeded"
    assert "requested 40 tokens (20 in the messages, 20 in the completion)" in result.message


async def test_max_tokens_over_the_model_limit() -> None:
    result = await service(output=10).create(chat("hi", max_completion_tokens=11))
    assert isinstance(result, ErrorInfo)
    assert (result.status, result.param) == (400, "max_completion_tokens")
    assert "11" in result.message and "10" in result.message


async def test_sampling_settings_reach_the_engine() -> None:
    engine = ScriptedEngine()
    await service(engine).create(
        chat(temperature=0, top_p=0.5, seed=7, stop=["capital"], max_tokens=5, presence_penalty=1, frequency_penalty=-2)
    )
    sampling = engine.seen[0][1]
    assert (sampling.temperature, sampling.top_p, sampling.seed, sampling.stop) == (0.0, 0.5, 7, ("capital",))
    assert (sampling.presence_penalty, sampling.frequency_penalty) == (1.0, -2.0)


async def test_top_p_zero_is_greedy() -> None:
    """The spec allows top_p 0 (only the most likely token); the engines take (0, 1], so it becomes greedy."""
    engine = ScriptedEngine()
    await service(engine).create(chat(temperature=0.7, top_p=0))
    assert (engine.seen[0][1].temperature, engine.seen[0][1].top_p) == (0.0, 1.0)


async def test_completion_echo_and_zero_max_tokens() -> None:
    echoed = await service().create(CompletionRequest(model="m", prompt="Say: ", max_tokens=2, echo=True))
    assert isinstance(echoed, CompletionResponse) and echoed.choices[0].text == "Say: Paris is"
    assert echoed.usage is not None and echoed.usage.completion_tokens == 2  # the echoed prompt is not completion
    engine = ScriptedEngine()
    nothing = await service(engine).create(CompletionRequest(model="m", prompt="Say", max_tokens=0, echo=True))
    assert isinstance(nothing, CompletionResponse) and nothing.choices[0].text == "Say"
    assert nothing.choices[0].finish_reason == "length" and engine.seen == []
    streamed = CompletionRequest(model="m", prompt="Say: ", stream=True, max_tokens=1, echo=True)
    events = await collect(service(), streamed)
    assert [json.loads(str(e)[6:])["choices"][0]["text"] for e in events] == ["Say: Paris"]


async def collect(service: GenerationService, request: ChatCompletionRequest | CompletionRequest) -> list[object]:
    return [event async for event in service.stream(request)]


async def test_chat_stream_chunks_and_usage() -> None:
    events = await collect(service(), chat(stream=True, max_tokens=3, stream_options={"include_usage": True}))
    assert all(isinstance(e, str) and e.startswith("data: ") and e.endswith("\n\n") for e in events)
    chunks = [json.loads(str(e)[6:]) for e in events]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "Paris"}  # the first token opens it
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]) == "Paris is the"
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 3
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == "chatcmpl-x" for c in chunks)


async def test_completion_stream_without_usage() -> None:
    events = await collect(service(), CompletionRequest(model="m", prompt="p", stream=True, max_tokens=2))
    chunks = [json.loads(str(e)[6:]) for e in events]
    assert [c["choices"][0]["text"] for c in chunks] == ["Paris", " is"]
    assert all(c["object"] == "text_completion" and "usage" not in c for c in chunks)  # the spec has no null usage


async def test_stream_error_before_start_is_first_event() -> None:
    events = await collect(service(context=10), chat("x" * 40, stream=True))
    assert len(events) == 1 and isinstance(events[0], ErrorInfo) and events[0].status == 400


async def test_engine_failure_mid_stream_becomes_error_event() -> None:
    events = await collect(service(ScriptedEngine(fail_after=2)), chat(stream=True))
    assert isinstance(events[-1], ErrorInfo) and events[-1].status == 500
    assert sum(isinstance(e, str) for e in events) == 2  # two words, the first with the role


async def test_the_first_event_waits_for_the_engines_first_token() -> None:
    engine = ScriptedEngine(delay_s=0.3)
    started = time.monotonic()
    first = await anext(service(engine).stream(chat(stream=True)))
    assert time.monotonic() - started >= 0.3
    assert isinstance(first, str) and json.loads(first[6:])["choices"][0]["delta"] == {
        "role": "assistant",
        "content": "Paris",
    }


async def test_an_engine_failure_before_the_first_token_is_the_first_event() -> None:
    """Nothing has reached the client then, so the ingress may retry the request on another version."""
    events = await collect(service(ScriptedEngine(fail_after=0)), chat(stream=True))
    assert len(events) == 1 and isinstance(events[0], ErrorInfo) and events[0].status == 500


async def test_closing_the_stream_aborts_the_engine_request() -> None:
    engine = ScriptedEngine("a b c d e f", delay_s=0.01)
    stream = service(engine).stream(chat(stream=True))
    await anext(stream)
    await anext(stream)
    await stream.aclose()
    assert (engine.stats.aborted, engine.stats.running) == (1, 0)


@pytest.mark.parametrize("role", ["system", "developer", "assistant"])
async def test_roles_render_through_the_template(role: str) -> None:
    engine = ScriptedEngine()
    await service(engine).create(
        ChatCompletionRequest.model_validate(
            {"model": "m", "messages": [{"role": role, "content": "c"}, {"role": "user", "content": "u"}]}
        )
    )
    rendered = "".join(chr(i) for i in engine.seen[0][0])
    expected_role = "system" if role == "developer" else role
    assert rendered == f"{expected_role}: c\nuser: u\nassistant: "


# ---- LoRA adapters: a request naming a loaded adapter ------------------------------------------------------------


def with_adapters(*names: str) -> ScriptedEngine:
    engine = ScriptedEngine()
    engine.adapters = frozenset(names)
    return engine


async def test_a_request_naming_a_loaded_adapter_runs_on_it_and_is_answered_under_its_name() -> None:
    engine = with_adapters("a", "b")
    answer = await service(engine).create(chat(model="a"))
    assert isinstance(answer, ChatCompletionResponse) and answer.model == "a"
    completion = await service(engine).create(CompletionRequest(model="b", prompt="say", max_tokens=2))
    assert isinstance(completion, CompletionResponse) and completion.model == "b"
    assert engine.seen_adapters == ["a", "b"]


@pytest.mark.parametrize("model", ["m", "not-an-adapter"])
async def test_any_other_request_runs_on_the_base_model(model: str) -> None:
    engine = with_adapters("a")
    answer = await service(engine).create(chat(model=model))
    assert isinstance(answer, ChatCompletionResponse) and answer.model == "m"
    assert engine.seen_adapters == [None]


async def test_an_adapter_stream_carries_its_name_in_every_chunk() -> None:
    engine = with_adapters("a")
    events = await collect(service(engine), chat(model="a", stream=True, stream_options={"include_usage": True}))
    chunks = [json.loads(str(e)[6:]) for e in events]
    assert len(chunks) > 2 and {c["model"] for c in chunks} == {"a"}  # the usage chunk too
    events = await collect(service(engine), CompletionRequest(model="a", prompt="p", stream=True, max_tokens=2))
    assert {json.loads(str(e)[6:])["model"] for e in events} == {"a"}
    assert engine.seen_adapters == ["a", "a"]


async def test_the_service_asks_the_engine_for_its_adapters_on_every_request() -> None:
    engine = with_adapters()
    served = service(engine)
    engine.adapters = frozenset({"a"})  # loaded after the service was built
    first = await served.create(chat(model="a"))
    engine.adapters = frozenset()  # and unloaded again
    second = await served.create(chat(model="a"))
    assert isinstance(first, ChatCompletionResponse) and isinstance(second, ChatCompletionResponse)
    assert (first.model, second.model, engine.seen_adapters) == ("a", "m", ["a", None])
