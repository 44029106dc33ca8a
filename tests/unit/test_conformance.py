"""Conformance with OpenAI's published spec, without Ray: what the serving code answers (every response kind and
every error body) against the spec's component schemas, and the request side against the README's compatibility
tables, which must list exactly the fields of each request schema and describe how each one behaves on each engine:
the transformers column is checked here on the graph's own serving code, the vLLM column against the capability
check (what vLLM itself does with each field is checked by the e2e and parity tests on real weights)."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import BaseModel, ValidationError

from app.config import EngineKind
from app.errors import (
    ContextLengthExceeded,
    ErrorInfo,
    InvalidRequest,
    ModelNotFound,
    ModelNotSupported,
    NotFound,
    OpenAIError,
    PayloadTooLarge,
    ServiceUnavailable,
    UpstreamTimeout,
    to_error_info,
)
from app.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    ModelCard,
    ModelList,
)
from app.serving.capabilities import fields_beyond
from app.serving.generation import GenerationService, Limits
from tests.fakes import CharTokenizer, HashEncoder, ScriptedEngine, hash_encoder_service
from tests.spec import assert_conforms, errors, rewrite_nullable, schema_properties, spec

README = Path(__file__).resolve().parents[2] / "README.md"
CHAT, COMPLETIONS, EMBEDDINGS = "/v1/chat/completions", "/v1/completions", "/v1/embeddings"
REQUEST_SCHEMAS = {
    CHAT: ("CreateChatCompletionRequest", ChatCompletionRequest),
    COMPLETIONS: ("CreateCompletionRequest", CompletionRequest),
    EMBEDDINGS: ("CreateEmbeddingRequest", EmbeddingRequest),
}
BASE: dict[str, dict[str, Any]] = {
    CHAT: {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
    COMPLETIONS: {"model": "m", "prompt": "say"},
    EMBEDDINGS: {"model": "e", "input": ["abc"]},
}
STATUSES = {"honoured", "partly", "ignored", "rejected"}


# ---- the serving code, with test doubles -----------------------------------------------------------------------


def generation(engine: ScriptedEngine) -> GenerationService:
    return GenerationService(
        model="m",
        tokenizer=CharTokenizer(),
        engine=engine,
        limits=Limits(max_model_len=200, max_output_tokens=100),
        clock=lambda: 1234.0,
        new_id=lambda: "x",
    )


async def outcome(path: str, body: dict[str, Any]) -> object:
    """What the serving code does with a request body: the 400 for it, or the answer and what reached the engine."""
    try:
        request = REQUEST_SCHEMAS[path][1].model_validate(body)
    except ValidationError as exc:
        return to_error_info(exc)
    if isinstance(request, EmbeddingRequest):
        return await hash_encoder_service().embed(request)
    assert isinstance(request, ChatCompletionRequest | CompletionRequest)
    engine = ScriptedEngine("Paris is the capital")
    service = generation(engine)
    answer = [e async for e in service.stream(request)] if request.stream else await service.create(request)
    first = answer[0] if isinstance(answer, list) else answer
    return first if isinstance(first, ErrorInfo) else (answer, engine.seen)


def sse_payloads(events: Sequence[object]) -> list[dict[str, Any]]:
    assert all(isinstance(e, str) and e.startswith("data: ") for e in events), events
    return [json.loads(str(e)[len("data: ") :]) for e in events]


def dumped(model: BaseModel) -> dict[str, Any]:
    """A response as the wire has it."""
    data: dict[str, Any] = json.loads(model.model_dump_json())
    return data


def completion_chunk_errors(chunk: dict[str, Any], last: bool) -> list[str]:
    """A streamed completion chunk against `CreateCompletionResponse`, allowing the one documented deviation: a null
    `finish_reason` on a chunk that is not the last (the spec's schema, shared with plain responses, has no null)."""
    problems = errors("CreateCompletionResponse", chunk)
    if last:
        return problems
    nulls = {f"choices/{i}/finish_reason" for i, c in enumerate(chunk["choices"]) if c.get("finish_reason") is None}
    return [p for p in problems if p.split(": ", 1)[0] not in nulls]


# ---- responses ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fields", [{}, {"max_tokens": 2}, {"stop": "capital", "temperature": 0}])
async def test_chat_completion_conforms(fields: dict[str, Any]) -> None:
    answer, _ = await outcome(CHAT, {**BASE[CHAT], **fields})  # type: ignore[misc]
    body = dumped(answer)
    assert_conforms("CreateChatCompletionResponse", body)
    assert body["choices"][0]["logprobs"] is None and body["choices"][0]["message"]["refusal"] is None


@pytest.mark.parametrize("include_usage", [False, True])
async def test_every_chat_chunk_conforms(include_usage: bool) -> None:
    body = {**BASE[CHAT], "stream": True, "max_tokens": 3, "stream_options": {"include_usage": include_usage}}
    events, _ = await outcome(CHAT, body)  # type: ignore[misc]
    chunks = sse_payloads(events)
    for chunk in chunks:
        assert_conforms("CreateChatCompletionStreamResponse", chunk)
    finished = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert len(finished) == 1 and finished[0]["choices"][0]["finish_reason"] == "length"
    if include_usage:
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 3
    else:
        assert all(c["usage"] is None for c in chunks)


@pytest.mark.parametrize("fields", [{}, {"echo": True}, {"max_tokens": 0}, {"echo": True, "max_tokens": 0}])
async def test_completion_conforms(fields: dict[str, Any]) -> None:
    answer, seen = await outcome(COMPLETIONS, {**BASE[COMPLETIONS], **fields})  # type: ignore[misc]
    body = dumped(answer)
    assert_conforms("CreateCompletionResponse", body)
    text = body["choices"][0]["text"]
    assert text.startswith("say") == bool(fields.get("echo"))
    if fields.get("max_tokens") == 0:  # nothing reaches the engine
        assert seen == [] and body["choices"][0]["finish_reason"] == "length"
        assert body["usage"]["completion_tokens"] == 0


@pytest.mark.parametrize("fields", [{}, {"echo": True, "stream_options": {"include_usage": True}}])
async def test_every_completion_chunk_conforms_but_for_null_finish_reason(fields: dict[str, Any]) -> None:
    events, _ = await outcome(COMPLETIONS, {**BASE[COMPLETIONS], "stream": True, **fields})  # type: ignore[misc]
    chunks = sse_payloads(events)
    texted = [c for c in chunks if c["choices"]]
    for chunk in chunks:
        assert completion_chunk_errors(chunk, last=chunk is texted[-1] or not chunk["choices"]) == []
        assert "usage" in chunk if not chunk["choices"] else "usage" not in chunk  # never `usage: null`
    assert texted[-1]["choices"][0]["finish_reason"] == "stop"
    assert all(c["choices"][0]["finish_reason"] is None for c in texted[:-1])
    # the deviation is exactly that: the same chunk with a finish_reason has no other fault
    assert errors("CreateCompletionResponse", texted[0]) == [
        "choices/0/finish_reason: None is not of type 'string'",
        "choices/0/finish_reason: None is not one of ['stop', 'length', 'content_filter']",
    ]


async def test_embeddings_conform_as_float_and_decoded_base64() -> None:
    plain = dumped(await outcome(EMBEDDINGS, {**BASE[EMBEDDINGS], "input": ["abc", "xyz"]}))  # type: ignore[arg-type]
    assert_conforms("CreateEmbeddingResponse", plain)
    packed = dumped(
        await outcome(EMBEDDINGS, {**BASE[EMBEDDINGS], "input": ["abc", "xyz"], "encoding_format": "base64"})  # type: ignore[arg-type]
    )
    # the one documented deviation: a base64 string where the spec describes floats
    assert errors("CreateEmbeddingResponse", packed) == [
        f"data/{i}/embedding: {item['embedding']!r} is not of type 'array'" for i, item in enumerate(packed["data"])
    ]
    for item in packed["data"]:
        item["embedding"] = np.frombuffer(base64.b64decode(item["embedding"]), dtype="<f4").tolist()
    assert_conforms("CreateEmbeddingResponse", packed)
    assert np.allclose([d["embedding"] for d in packed["data"]], [d["embedding"] for d in plain["data"]])


def test_model_list_conforms() -> None:
    models = ModelList(data=[ModelCard(id="tiny-chat", created=1, owned_by="inference-graph")])
    assert_conforms("ListModelsResponse", dumped(models))


ERRORS: list[OpenAIError] = [
    InvalidRequest("bad", param="messages"),
    ContextLengthExceeded("long", param="prompt"),
    ModelNotSupported("wrong kind", param="model"),
    ModelNotFound("missing", param="model"),
    NotFound("no route"),
    PayloadTooLarge("big"),
    ServiceUnavailable("busy"),
    UpstreamTimeout("slow"),
]


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: type(e).__name__)
def test_error_bodies_conform(error: OpenAIError) -> None:
    assert_conforms("ErrorResponse", error.info().body())


async def test_errors_from_validation_the_service_and_a_broken_engine_conform() -> None:
    rejected = await outcome(CHAT, {**BASE[CHAT], "tools": [{"type": "function", "function": {"name": "f"}}]})
    too_long = await outcome(CHAT, {**BASE[CHAT], "messages": [{"role": "user", "content": "x" * 300}]})
    bad_dims = await outcome(EMBEDDINGS, {**BASE[EMBEDDINGS], "dimensions": 8})
    broken = [e async for e in generation(ScriptedEngine(fail_after=1)).stream(ChatCompletionRequest(**BASE[CHAT]))]
    infos = [rejected, too_long, bad_dims, broken[-1], to_error_info(KeyError("x")), to_error_info(TimeoutError())]
    for info in infos:
        assert isinstance(info, ErrorInfo)
        assert_conforms("ErrorResponse", info.body())
    assert [i.status for i in infos] == [400, 400, 400, 500, 500, 504]  # type: ignore[union-attr]


def test_the_validators_are_not_vacuous() -> None:
    """The spec helper rejects what the spec rejects, and reads `nullable` as "or null", no more."""
    good = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m", "usage": None}
    good["choices"] = [{"index": 0, "delta": {}, "finish_reason": None, "logprobs": None}]
    assert errors("CreateChatCompletionStreamResponse", good) == []
    assert errors("CreateChatCompletionStreamResponse", {**good, "choices": [{"index": 0, "delta": {}}]})
    bogus = {**good, "choices": [{"index": 0, "delta": {}, "finish_reason": "bogus"}]}
    assert errors("CreateChatCompletionStreamResponse", bogus)
    assert errors("CreateChatCompletionStreamResponse", {k: v for k, v in good.items() if k != "id"})
    assert errors("ErrorResponse", {"error": {"message": "m", "type": "t", "param": None}})
    assert errors("CreateEmbeddingResponse", {"object": "list", "data": [], "model": "e"})
    with pytest.raises(KeyError):
        errors("NoSuchSchema", {})


def test_nullable_is_rewritten_into_json_schema() -> None:
    assert rewrite_nullable({"type": "string", "enum": ["a"], "nullable": True}) == {
        "type": ["string", "null"],
        "enum": ["a", None],
    }
    ref = {"$ref": "#/x", "nullable": True}
    assert rewrite_nullable(ref) == {"anyOf": [{"$ref": "#/x"}, {"type": "null"}]}
    assert rewrite_nullable({"type": "integer", "nullable": False}) == {"type": "integer"}
    assert rewrite_nullable({"properties": {"nullable": {"type": "boolean"}}}) == {
        "properties": {"nullable": {"type": "boolean"}}
    }
    assert '"nullable"' not in json.dumps(spec())


# ---- requests: the README's tables against the spec and the code -------------------------------------------


@dataclass(frozen=True)
class Sample:
    """How a field behaves. honoured: `value` changes the outcome; partly and rejected: `value` is a 400 naming the
    field, and every `accepted` value is not (for rejected fields they change nothing); ignored: `value` changes
    nothing. `needs` are other fields the sample needs."""

    status: str
    value: Any = None
    accepted: tuple[Any, ...] = ()
    needs: dict[str, Any] = field(default_factory=dict)


TOOL = {"type": "function", "function": {"name": "f"}}
STREAMING = {"stream": True}
SHARED = {
    "temperature": Sample("honoured", 0.5),
    "top_p": Sample("honoured", 0.5),
    "presence_penalty": Sample("honoured", 1.5),
    "frequency_penalty": Sample("honoured", -1.5),
    "seed": Sample("honoured", 7),
    "stop": Sample("honoured", ["the", "zz"]),
    "stream": Sample("honoured", True),
    "stream_options": Sample("honoured", {"include_usage": True}, needs=STREAMING),
    "n": Sample("partly", 2, accepted=(1,)),
    "logit_bias": Sample("rejected", {"50256": -100}, accepted=({},)),
    "user": Sample("ignored", "user-1"),
}
SAMPLES: dict[str, dict[str, Sample]] = {
    CHAT: {
        **SHARED,
        "messages": Sample(
            "partly",
            [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x.test/a.png"}}]}],
            accepted=([{"role": "user", "content": [{"type": "text", "text": "hi"}]}],),
        ),
        "max_completion_tokens": Sample("honoured", 2),
        "max_tokens": Sample("honoured", 2),
        "response_format": Sample("partly", {"type": "json_object"}, accepted=({"type": "text"},)),
        "modalities": Sample("partly", ["text", "audio"], accepted=(["text"],)),
        "logprobs": Sample("rejected", True, accepted=(False,)),
        "top_logprobs": Sample("rejected", 2),
        "tools": Sample("rejected", [TOOL], accepted=([],)),
        "tool_choice": Sample("rejected", "required", accepted=("none", "auto")),
        "parallel_tool_calls": Sample("ignored", False),
        "functions": Sample("rejected", [{"name": "f"}]),
        "function_call": Sample("rejected", {"name": "f"}, accepted=("none", "auto")),
        "audio": Sample("rejected", {"voice": "alloy", "format": "mp3"}),
        "prediction": Sample("rejected", {"type": "content", "content": "Paris"}),
        "reasoning_effort": Sample("rejected", "high", accepted=("none",)),
        "verbosity": Sample("rejected", "low"),
        "web_search_options": Sample("rejected", {}),
        "moderation": Sample("rejected", {"model": "omni-moderation-latest"}),
        "service_tier": Sample("rejected", "flex", accepted=("auto", "default")),
        "store": Sample("rejected", True, accepted=(False,)),
        "metadata": Sample("ignored", {"team": "a"}),
        "safety_identifier": Sample("ignored", "user-1"),
        "prompt_cache_key": Sample("ignored", "k"),
        "prompt_cache_retention": Sample("ignored", "24h"),
        "prompt_cache_options": Sample("ignored", {"mode": "implicit", "ttl": "30m"}),
    },
    COMPLETIONS: {
        **SHARED,
        "prompt": Sample("partly", ["one", "two"], accepted=(["say"],)),
        "max_tokens": Sample("honoured", 2),
        "echo": Sample("honoured", True),
        "best_of": Sample("partly", 2, accepted=(1,)),
        "logprobs": Sample("rejected", 2),
        "suffix": Sample("rejected", " the end"),
    },
    EMBEDDINGS: {
        "input": Sample("honoured", [[97, 98, 99], [120]], accepted=(["abc", "xyz"], "abc", [97, 98])),
        "encoding_format": Sample("honoured", "base64"),
        "dimensions": Sample("partly", 8, accepted=(HashEncoder.dimensions,)),
        "user": Sample("ignored", "user-1"),
    },
}
CASES = [(path, name) for path, samples in SAMPLES.items() for name in samples]
REQUIRED = {"model", "messages", "prompt", "input"}


def compatibility_rows(path: str) -> dict[str, list[str]]:
    """`field -> [support per engine column]` from the README's table for the endpoint."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("\n## OpenAI compatibility\n") :]
    section = section[: section.index("\n## ", 1)]
    table = section[section.index(f"\n### `POST {path}`") :]
    table = table[: table.index("\n### ", 1)]
    rows = re.findall(r"^\| `(\w+)` \| (.*)$", table, flags=re.MULTILINE)
    return {name: [cell.strip() for cell in rest.split(" | ") if cell.strip() in STATUSES] for name, rest in rows}


def compatibility_table(path: str) -> dict[str, str]:
    """`field -> support` on the graph's own serving code (the transformers column; embeddings have one)."""
    return {name: cells[-1] for name, cells in compatibility_rows(path).items()}


def spec_field(path: str, name: str) -> dict[str, Any]:
    """The spec's schema of one request field, with `$ref`s and `anyOf: [X, null]` unwrapped."""
    schemas = spec()["components"]["schemas"]
    found: dict[str, Any] = {}

    def walk(node: dict[str, Any]) -> None:
        if "$ref" in node:
            walk(schemas[node["$ref"].rsplit("/", 1)[-1]])
        for part in node.get("allOf", []):
            walk(part)
        if name in node.get("properties", {}):
            found.update(node["properties"][name])

    walk(schemas[REQUEST_SCHEMAS[path][0]])
    while True:
        if "$ref" in found:
            found = {**schemas[found.pop("$ref").rsplit("/", 1)[-1]], **found}
        branches = [b for b in found.get("anyOf", []) if b != {"type": "null"}]
        if len(branches) != 1:
            return found
        found = {**{k: v for k, v in found.items() if k != "anyOf"}, **branches[0]}


@pytest.mark.parametrize("path", list(REQUEST_SCHEMAS))
def test_table_and_models_list_exactly_the_spec_fields(path: str) -> None:
    schema, model = REQUEST_SCHEMAS[path]
    fields = schema_properties(schema)
    table = compatibility_table(path)
    assert set(table) == fields
    assert set(table.values()) <= STATUSES
    assert fields <= set(model.model_fields)  # every spec field is declared, so none is mistaken for unknown
    assert {name: table[name] for name in SAMPLES[path]} == {name: s.status for name, s in SAMPLES[path].items()}
    assert set(SAMPLES[path]) == fields - {"model"}


ENGINE_PATHS = [CHAT, COMPLETIONS]


@pytest.mark.parametrize("path", ENGINE_PATHS)
def test_where_vllm_serves_more_the_capability_check_routes_to_it(path: str) -> None:
    """A field the vLLM column serves beyond the transformers column is accepted by the protocol, flagged for
    transformers versions and not for vLLM versions, so the planner keeps such requests on vLLM."""
    rows = compatibility_rows(path)
    assert all(len(cells) == 2 for cells in rows.values()), rows
    wider = [name for name, (vllm, transformers) in rows.items() if vllm != transformers]
    assert wider  # the table does say vLLM serves more
    for name in wider:
        assert rows[name][0] == "honoured", name
        sample = SAMPLES[path][name]
        needs = {"tools": [TOOL]} if name == "tool_choice" else sample.needs
        request = REQUEST_SCHEMAS[path][1].model_validate({**BASE[path], **needs, name: sample.value})
        assert fields_beyond(EngineKind.VLLM, request) == []
        if rows[name][1] != "ignored":  # an ignored field changes nothing, so it may reach either engine
            assert name in fields_beyond(EngineKind.TRANSFORMERS, request)


@pytest.mark.parametrize("path", ENGINE_PATHS)
def test_vllm_extra_parameters_are_declared_listed_and_kept_from_transformers(path: str) -> None:
    model = REQUEST_SCHEMAS[path][1]
    extras = set(model.model_fields) - schema_properties(REQUEST_SCHEMAS[path][0])
    text = README.read_text(encoding="utf-8")
    listed = text[text.index("\n### vLLM's extra parameters\n") :]
    listed = listed[: listed.index("\n## ", 1)]
    assert extras and all(f"`{name}`" in listed for name in extras), sorted(extras)
    for name in extras:
        default = model.model_fields[name].default
        value: Any = {"x": 1} if isinstance(default, dict) or name.endswith(("_kwargs", "_xargs", "outputs")) else 3
        if "bool" in str(model.model_fields[name].annotation):
            value = not default
        elif name in ("stop_token_ids", "allowed_token_ids"):
            value = [5]
        elif name in ("bad_words",):
            value = ["x"]
        elif name in ("cache_salt", "request_id"):
            value = "s"
        elif name == "documents":
            value = [{"title": "t", "text": "x"}]
        elif name == "response_format":
            value = {"type": "json_object"}
        request = model.model_validate({**BASE[path], name: value})
        assert fields_beyond(EngineKind.TRANSFORMERS, request) == [name], name
        assert fields_beyond(EngineKind.VLLM, request) == []


@pytest.mark.parametrize("path, name", CASES)
def test_samples_are_valid_requests_under_the_spec(path: str, name: str) -> None:
    sample = SAMPLES[path][name]
    for value in (sample.value, *sample.accepted):
        assert_conforms(REQUEST_SCHEMAS[path][0], {**BASE[path], **sample.needs, name: value})


@pytest.mark.parametrize("path, name", CASES)
async def test_each_field_behaves_as_the_table_says(path: str, name: str) -> None:
    sample = SAMPLES[path][name]
    without = {**BASE[path], **sample.needs}
    baseline = await outcome(path, without)
    assert not isinstance(baseline, ErrorInfo), baseline
    got = await outcome(path, {**without, name: sample.value})
    if sample.status == "honoured":
        assert not isinstance(got, ErrorInfo), got
        assert got != baseline
    elif sample.status == "ignored":
        assert got == baseline
    else:
        assert isinstance(got, ErrorInfo) and got.status == 400, got
        assert got.param is not None and (got.param == name or got.param.startswith(f"{name}.")), got
        assert name in got.message
    for value in sample.accepted:
        accepted = await outcome(path, {**without, name: value})
        assert not isinstance(accepted, ErrorInfo), accepted
        if sample.status == "rejected":
            assert accepted == baseline


@pytest.mark.parametrize("path, name", [(p, n) for p, n in CASES if n not in REQUIRED])
async def test_null_means_the_default(path: str, name: str) -> None:
    needs = SAMPLES[path][name].needs
    assert await outcome(path, {**BASE[path], **needs, name: None}) == await outcome(path, {**BASE[path], **needs})


@pytest.mark.parametrize(
    "path, name", [(p, n) for p, n in CASES if SAMPLES[p][n].status != "rejected" and n not in REQUIRED]
)
def test_defaults_follow_the_spec(path: str, name: str) -> None:
    """Fields we act on default as the spec says (a field without a spec default defaults to null)."""
    default = REQUEST_SCHEMAS[path][1].model_fields[name].default
    assert default == spec_field(path, name).get("default"), f"{name}: ours {default!r}, spec {spec_field(path, name)}"


def test_required_fields_are_the_specs() -> None:
    for schema, model in REQUEST_SCHEMAS.values():
        required = set(spec()["components"]["schemas"][schema].get("required", []))
        for part in spec()["components"]["schemas"][schema].get("allOf", []):
            required |= set(part.get("required", []))
        assert {n for n, f in model.model_fields.items() if f.is_required()} == required


INT64 = (-(2**63), 2**63 - 1)  # the spec writes int64's bounds rounded, as floats


@pytest.mark.parametrize(
    "path, name", [(p, n) for p, n in CASES if SAMPLES[p][n].status == "honoured" and "minimum" in spec_field(p, n)]
)
async def test_ranges_follow_the_spec(path: str, name: str) -> None:
    schema = spec_field(path, name)
    low, high = INT64 if name == "seed" else (schema["minimum"], schema.get("maximum"))
    step = 1 if schema.get("type") in ("integer", ["integer", "null"]) else 0.01
    needs = SAMPLES[path][name].needs
    for value in (low, high):
        if value is not None:
            assert not isinstance(await outcome(path, {**BASE[path], **needs, name: value}), ErrorInfo), value
    for value in (low - step, None if high is None else high + step):
        if value is not None:
            got = await outcome(path, {**BASE[path], **needs, name: value})
            assert isinstance(got, ErrorInfo) and got.param == name, (value, got)


def test_the_range_checks_cover_the_sampling_fields() -> None:
    covered = {(p, n) for p, n in CASES if SAMPLES[p][n].status == "honoured" and "minimum" in spec_field(p, n)}
    for path in (CHAT, COMPLETIONS):
        assert {"temperature", "top_p", "presence_penalty", "frequency_penalty"} <= {n for p, n in covered if p == path}
    assert (COMPLETIONS, "max_tokens") in covered
