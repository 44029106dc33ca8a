"""OpenAI request and response models: the subset of the API this graph serves.

Every field of OpenAI's `CreateChatCompletionRequest`, `CreateCompletionRequest` and `CreateEmbeddingRequest` is
declared here and is either honoured, accepted and ignored (a hint with no effect on the output, listed as such in
the README's compatibility table), or accepted only at its no-op values (`_only`): anything else is a 400 that names
the field. Fields outside the spec are unknown, and unknown fields are a 400 too (`extra="forbid"`), so nothing is
silently half-done. An explicit null for a declared field means the field's default, as the spec's `nullable`
fields do.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    SerializerFunctionWrapHandler,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError

T = TypeVar("T")


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _null_means_default(cls, data: Any) -> Any:
        """Drop explicit nulls of optional fields, so they take their defaults; an unknown field stays unknown."""
        if isinstance(data, dict):
            fields = cls.model_fields
            return {k: v for k, v in data.items() if v is not None or k not in fields or fields[k].is_required()}
        return data


class Response(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _only(what: str, *inert: JsonValue) -> AfterValidator:
    """A spec field this server does not implement: null and the listed no-op values pass, anything else is a 400
    naming the field."""

    def check(value: T) -> T:
        if value is None or any(type(value) is type(ok) and value == ok for ok in inert):
            return value
        raise _invalid(f"{what} is not supported by this server")

    return AfterValidator(check)


def _invalid(message: str) -> PydanticCustomError:
    """A validation error whose message reads as written (a ValueError's gets a "Value error, " prefix)."""
    return PydanticCustomError("invalid_value", message)


# ---- requests -----------------------------------------------------------------------------------------------


class PromptCacheBreakpoint(Request):
    mode: Literal["explicit"] = "explicit"


class PromptCacheOptions(Request):
    mode: Literal["implicit", "explicit"] | None = None
    ttl: Literal["30m"] | None = None


class TextPart(Request):
    type: Literal["text"]
    text: str
    prompt_cache_breakpoint: PromptCacheBreakpoint | None = None  # accepted, ignored: a caching hint


class ChatMessage(Request):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | Annotated[list[TextPart], Field(min_length=1)] | None = Field(default=None, validate_default=True)
    name: str | None = None  # accepted, ignored: the chat templates have no place for it
    refusal: Annotated[JsonValue, _only("refusal in a message")] = None
    tool_calls: Annotated[JsonValue, _only("tool_calls", [])] = None
    function_call: Annotated[JsonValue, _only("function_call")] = None
    audio: Annotated[JsonValue, _only("audio")] = None

    @field_validator("content", mode="before")
    @classmethod
    def _text_parts_only(cls, value: Any) -> Any:
        if value == []:
            raise _invalid("content must not be an empty list")
        for part in value if isinstance(value, list) else ():
            kind = part.get("type") if isinstance(part, dict) else None
            if kind != "text":
                raise _invalid(f"content parts of type {kind!r} are not supported; only 'text' parts are")
        return value

    @field_validator("content")
    @classmethod
    def _content_required(cls, value: str | list[TextPart] | None, info: ValidationInfo) -> str | list[TextPart] | None:
        if value is None and info.data.get("role", "assistant") != "assistant":
            raise _invalid(f"a {info.data['role']} message needs content")
        return value

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class StreamOptions(Request):
    include_usage: bool = False
    include_obfuscation: bool = True  # accepted, ignored: chunks never carry `obfuscation`


Stop = str | Annotated[list[str], Field(min_length=1, max_length=4)] | None


class ModelRequest(Request):
    model: str


class SamplingFields(ModelRequest):
    """Fields shared by chat and text completions, with the spec's defaults and ranges."""

    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, ge=0.0, le=1.0)
    presence_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    seed: int | None = Field(default=None, ge=-(2**63), le=2**63 - 1)
    n: Annotated[int, Field(ge=1, le=128), _only("n other than 1", 1)] = 1
    stop: Stop = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    logit_bias: Annotated[dict[str, int] | None, _only("logit_bias", {})] = None
    user: str | None = None  # accepted, ignored: an end-user id for abuse monitoring

    @field_validator("stream_options")
    @classmethod
    def _only_when_streaming(cls, value: StreamOptions | None, info: ValidationInfo) -> StreamOptions | None:
        if value is not None and not info.data.get("stream", False):
            raise _invalid("stream_options is only allowed when stream is true")
        return value

    def stop_sequences(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: Annotated[bool, _only("logprobs", False)] = False
    top_logprobs: Annotated[int | None, _only("top_logprobs")] = None
    response_format: Annotated[JsonValue, _only("response_format other than text", {"type": "text"})] = None
    tools: Annotated[JsonValue, _only("tools", [])] = None
    tool_choice: Annotated[JsonValue, _only("tool_choice other than none or auto", "none", "auto")] = None
    parallel_tool_calls: bool = True  # accepted, ignored: there are no tools to call
    functions: Annotated[JsonValue, _only("functions")] = None
    function_call: Annotated[JsonValue, _only("function_call other than none or auto", "none", "auto")] = None
    modalities: Annotated[JsonValue, _only("modalities other than text", ["text"])] = None
    audio: Annotated[JsonValue, _only("audio output")] = None
    prediction: Annotated[JsonValue, _only("prediction")] = None
    reasoning_effort: Annotated[JsonValue, _only("reasoning_effort other than none", "none")] = None
    verbosity: Annotated[JsonValue, _only("verbosity")] = None
    web_search_options: Annotated[JsonValue, _only("web_search_options")] = None
    moderation: Annotated[JsonValue, _only("moderation")] = None
    service_tier: Annotated[JsonValue, _only("service_tier other than auto or default", "auto", "default")] = None
    store: Annotated[bool, _only("store", False)] = False
    # accepted, ignored: labels and caching hints with no effect on the output
    metadata: dict[str, str] | None = None
    safety_identifier: str | None = Field(default=None, max_length=64)
    prompt_cache_key: str | None = None
    prompt_cache_retention: Literal["in_memory", "24h"] | None = None
    prompt_cache_options: PromptCacheOptions | None = None

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


class CompletionRequest(SamplingFields):
    prompt: str | Annotated[list[str], Field(min_length=1, max_length=1)]
    max_tokens: int = Field(default=16, ge=0)
    echo: bool = False
    best_of: Annotated[int, Field(ge=0, le=20), _only("best_of other than 1", 1)] = 1
    logprobs: Annotated[int | None, _only("logprobs")] = None
    suffix: Annotated[str | None, _only("suffix")] = None

    @field_validator("prompt", mode="before")
    @classmethod
    def _one_text_prompt(cls, value: Any) -> Any:
        one_text = isinstance(value, list) and len(value) == 1 and isinstance(value[0], str)
        if not (isinstance(value, str) or one_text):
            raise _invalid("only one prompt per request is supported, as a string or a list of one string")
        return value

    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]

    def requested_max_tokens(self) -> int | None:
        return self.max_tokens


class EmbeddingRequest(ModelRequest):
    input: str | list[str]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = None  # accepted, ignored: an end-user id for abuse monitoring

    @field_validator("input", mode="before")
    @classmethod
    def _text_only(cls, value: Any) -> Any:
        if isinstance(value, list) and not all(isinstance(item, str) for item in value):
            raise _invalid("token arrays are not supported; send text")
        if not isinstance(value, str | list):
            raise _invalid("input must be a string or a list of strings")
        return value

    @field_validator("input")
    @classmethod
    def _non_empty(cls, value: str | list[str]) -> str | list[str]:
        texts = [value] if isinstance(value, str) else value
        if not texts:
            raise _invalid("input must not be an empty list")
        if any(text == "" for text in texts):
            raise _invalid("input must not contain empty strings")
        return value

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


class RerankRequest(ModelRequest):
    query: str = Field(min_length=1)
    documents: list[str] = Field(min_length=1)
    top_n: int | None = Field(default=None, ge=1)
    return_documents: bool = False


# ---- responses ----------------------------------------------------------------------------------------------

FinishReason = Literal["stop", "length"]


class Usage(Response):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(Response):
    role: Literal["assistant"] = "assistant"
    content: str | None
    refusal: str | None = None


class ChatChoice(Response):
    index: int = 0
    message: AssistantMessage
    finish_reason: FinishReason
    logprobs: None = None


class ChatCompletionResponse(Response):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class ChatDelta(Response):
    role: Literal["assistant"] | None = None
    content: str | None = None

    @model_serializer(mode="wrap")
    def _drop_unset(self, handler: SerializerFunctionWrapHandler) -> dict[str, object]:
        return {k: v for k, v in handler(self).items() if v is not None}


class ChatChunkChoice(Response):
    index: int = 0
    delta: ChatDelta
    finish_reason: FinishReason | None = None
    logprobs: None = None


class ChatCompletionChunk(Response):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


class CompletionChoice(Response):
    """`finish_reason` is null on every streamed chunk but the last, as OpenAI's API sends it; the spec's schema,
    shared by plain responses and chunks, does not allow null there (see the README's compatibility section)."""

    index: int = 0
    text: str
    finish_reason: FinishReason | None
    logprobs: None = None


class CompletionResponse(Response):
    """Both the plain response and each streamed chunk (OpenAI uses one shape for both). The spec's `usage` is not
    nullable, so a chunk without usage leaves the field out."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None

    @model_serializer(mode="wrap")
    def _drop_missing_usage(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if data.get("usage") is None:
            data.pop("usage", None)
        return data


class Embedding(Response):
    """`embedding` is a base64 string of little-endian float32 when `encoding_format` is base64, as OpenAI's API
    sends it (the spec's schema only describes the float list)."""

    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingUsage(Response):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(Response):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage


class RerankDocument(Response):
    text: str


class RerankResult(Response):
    index: int
    relevance_score: float
    document: RerankDocument | None = None


class RerankResponse(Response):
    id: str
    model: str
    results: list[RerankResult]
    usage: EmbeddingUsage


class ModelCard(Response):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(Response):
    object: Literal["list"] = "list"
    data: list[ModelCard]
