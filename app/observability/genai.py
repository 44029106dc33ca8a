"""OpenTelemetry GenAI semantic-convention attributes of a request (`gen_ai.*`) and our routing decisions
(`inference_graph.*`), as plain dicts; and the content (prompt, completion) that is logged only when configured."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from app.observability.record import RequestRecord
from app.protocol import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionRequest,
    CompletionResponse,
    EmbeddingRequest,
    EngineAnswer,
    ModelRequest,
    RerankRequest,
)

Attributes = dict[str, str | bool | int | float | list[str]]


def request_attributes(body: ModelRequest, operation: str) -> Attributes:
    """What the client asked for: gen_ai.operation.name, gen_ai.request.*."""
    attrs: Attributes = {"gen_ai.operation.name": operation, "gen_ai.request.model": body.model}
    if isinstance(body, ChatCompletionRequest | CompletionRequest):
        maximum = body.requested_max_tokens()
        if maximum is not None:
            attrs["gen_ai.request.max_tokens"] = maximum
        attrs["gen_ai.request.temperature"] = body.temperature
        attrs["gen_ai.request.top_p"] = body.top_p
        attrs["gen_ai.request.presence_penalty"] = body.presence_penalty
        attrs["gen_ai.request.frequency_penalty"] = body.frequency_penalty
        if body.seed is not None:
            attrs["gen_ai.request.seed"] = body.seed
        if body.stop_sequences():
            attrs["gen_ai.request.stop_sequences"] = list(body.stop_sequences())
    elif isinstance(body, EmbeddingRequest):
        attrs["gen_ai.request.encoding_formats"] = [body.encoding_format]
    return attrs


def result_attributes(record: RequestRecord) -> Attributes:
    """What happened: the served model and version, usage, the routing decisions, the timings and the status."""
    attrs: Attributes = {
        "http.response.status_code": record.status,
        "inference_graph.request_id": record.request_id,
        "inference_graph.route": record.route,
        "inference_graph.stream": record.stream,
        "inference_graph.attempts": record.attempts,
    }
    optional: Mapping[str, Any] = {
        "gen_ai.provider.name": record.engine,
        "gen_ai.response.model": record.model,
        "gen_ai.response.id": record.response_id,
        "gen_ai.response.finish_reasons": list(record.finish_reasons),
        "inference_graph.version": record.version,
        "inference_graph.served_by": f"{record.model}@{record.version}" if record.version else "",
        "inference_graph.tier": record.tier,
        "inference_graph.experiment": record.experiment,
        "inference_graph.route.reason": record.reason,
        "inference_graph.rewrite_rules": list(record.rules),
        "error.type": record.error_code if not record.ok else None,
    }
    attrs.update({k: v for k, v in optional.items() if v})
    if record.report is not None:
        attrs["gen_ai.usage.input_tokens"] = record.prompt_tokens
        attrs["gen_ai.usage.output_tokens"] = record.completion_tokens
        attrs["inference_graph.engine_ms"] = round(record.engine_s * 1000, 3)
    if record.latency_s is not None:
        attrs["inference_graph.overhead_ms"] = round(record.overhead_s(record.latency_s) * 1000, 3)
    ttft = record.ttft_s
    if ttft is not None:
        attrs["inference_graph.time_to_first_token_ms"] = round(ttft * 1000, 3)
    return attrs


def content_attributes(record: RequestRecord) -> Attributes:
    """gen_ai.input.messages / gen_ai.output.messages (opt-in content), as JSON strings."""
    attrs: Attributes = {}
    if record.prompt is not None:
        attrs["gen_ai.input.messages"] = json.dumps(record.prompt, ensure_ascii=False)
    if record.completion:
        output = [{"role": "assistant", "parts": [{"type": "text", "content": "".join(record.completion)}]}]
        attrs["gen_ai.output.messages"] = json.dumps(output, ensure_ascii=False)
    return attrs


def prompt_content(body: ModelRequest) -> Any:
    """The request's text, in a JSON-able shape."""
    if isinstance(body, ChatCompletionRequest):
        return body.template_messages()
    if isinstance(body, CompletionRequest):
        prompts = body.prompts()
        return prompts[0] if len(prompts) == 1 else prompts
    if isinstance(body, EmbeddingRequest):
        return body.inputs()
    if isinstance(body, RerankRequest):
        return {"query": body.query, "documents": body.documents}
    return None


def response_details(value: object) -> tuple[str | None, tuple[str, ...], str | None]:
    """(response id, finish reasons, generated text) of a unary answer."""
    if isinstance(value, ChatCompletionResponse):
        reasons: tuple[str, ...] = tuple(c.finish_reason for c in value.choices)
        return value.id, reasons, "".join(c.message.content or "" for c in value.choices)
    if isinstance(value, CompletionResponse):
        reasons = tuple(c.finish_reason for c in value.choices if c.finish_reason)
        return value.id, reasons, "".join(c.text for c in value.choices)
    if isinstance(value, EngineAnswer):  # an engine's own answer: its choices are plain JSON
        choices = (value.model_extra or {}).get("choices") or []
        reasons = tuple(str(c["finish_reason"]) for c in choices if c.get("finish_reason"))
        text = "".join((c.get("message") or {}).get("content") or c.get("text") or "" for c in choices)
        return (value.model_extra or {}).get("id"), reasons, text
    return getattr(value, "id", None), (), None


def sse_text(event: str) -> str:
    """The generated text in a chat or completion stream's server-sent event(s) ('' for anything else)."""
    return "".join(_one_event_text(part) for part in event.split("\n\n") if part)


def _one_event_text(event: str) -> str:
    if not event.startswith("data: {"):
        return ""
    try:
        chunk = json.loads(event[6:])
    except ValueError:
        return ""
    parts = []
    for choice in chunk.get("choices") or []:
        delta = choice.get("delta")
        parts.append((delta or {}).get("content") or "" if delta is not None else choice.get("text") or "")
    return "".join(parts)
