"""OpenAI request and response models: the API this graph serves.

Every field of OpenAI's `CreateChatCompletionRequest`, `CreateCompletionRequest` and `CreateEmbeddingRequest` is
declared here and is either honoured, accepted and ignored (a hint with no effect on the output, listed as such in
the README's compatibility table), or accepted only at its no-op values (`_only`): anything else is a 400 that names
the field. vLLM's documented extra parameters are declared too (`VllmSampling`, `VllmChatExtras`): vLLM versions
honour them, and app/serving/capabilities.py keeps requests that use them away from engines that cannot. Any other
field is unknown, and unknown fields are a 400 (`extra="forbid"`), so nothing is silently half-done (vLLM's own
server ignores them). An explicit null for a declared field means the field's default, as the spec's `nullable`
fields do.
"""

from __future__ import annotations

import json
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

from app.json_schema import schema_problem

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


class FunctionCall(Request):
    name: str
    arguments: str


class ToolCall(Request):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(Request):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | Annotated[list[TextPart], Field(min_length=1)] | None = Field(default=None, validate_default=True)
    name: str | None = None  # accepted; the chat templates have no place for it
    tool_calls: list[ToolCall] | None = None  # an assistant message's calls
    tool_call_id: str | None = None  # a tool message: the call it answers
    reasoning: str | None = None  # an assistant message's reasoning (vLLM's reasoning parsers)
    refusal: Annotated[JsonValue, _only("refusal in a message")] = None
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

    @model_validator(mode="after")
    def _tool_fields_fit_the_role(self) -> ChatMessage:
        if self.tool_calls is not None and self.role != "assistant":
            raise _invalid(f"tool_calls is only allowed on assistant messages, not on a {self.role} message")
        if self.role == "tool" and not self.tool_call_id:
            raise _invalid("a tool message needs tool_call_id, the id of the call it answers")
        return self

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)

    def for_template(self) -> dict[str, Any]:
        """The message as chat templates read it (a developer message is a system message to them)."""
        message: dict[str, Any] = {"role": "system" if self.role == "developer" else self.role, "content": self.text()}
        if self.tool_calls:
            message["tool_calls"] = [_template_call(call) for call in self.tool_calls]
        if self.tool_call_id is not None:
            message["tool_call_id"] = self.tool_call_id
        return message


def _template_call(call: ToolCall) -> dict[str, Any]:
    """A call as templates read it: its arguments as an object, as vLLM hands them to the template."""
    try:
        arguments: Any = json.loads(call.function.arguments)
    except ValueError:
        arguments = call.function.arguments
    return {"id": call.id, "type": call.type, "function": {"name": call.function.name, "arguments": arguments}}


def _valid_schema(where: str) -> AfterValidator:
    """A JSON Schema the engine will compile: a malformed one is a 400 naming the field, not an engine error."""

    def check(value: dict[str, JsonValue] | None) -> dict[str, JsonValue] | None:
        problem = schema_problem(value) if value is not None else None
        if problem is not None:
            raise _invalid(f"{where} is not a valid JSON Schema: {problem}")
        return value

    return AfterValidator(check)


FunctionName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]


class FunctionDefinition(Request):
    name: FunctionName
    description: str | None = None
    parameters: Annotated[dict[str, JsonValue] | None, _valid_schema("parameters")] = None
    strict: bool | None = None


class Tool(Request):
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(Request):
    name: str


class NamedToolChoice(Request):
    type: Literal["function"]
    function: NamedFunction


class TextFormat(Request):
    type: Literal["text"]


class JsonObjectFormat(Request):
    type: Literal["json_object"]


class JsonSchemaSpec(Request):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, serialize_by_alias=True)

    name: FunctionName
    description: str | None = None
    json_schema: Annotated[dict[str, JsonValue] | None, _valid_schema("schema")] = Field(default=None, alias="schema")
    strict: bool | None = None


class JsonSchemaFormat(Request):
    type: Literal["json_schema"]
    json_schema: JsonSchemaSpec


ResponseFormat = Annotated[TextFormat | JsonObjectFormat | JsonSchemaFormat, Field(discriminator="type")]


class StreamOptions(Request):
    include_usage: bool = False
    include_obfuscation: bool = True  # accepted, ignored: chunks never carry `obfuscation`


Stop = str | Annotated[list[str], Field(min_length=1, max_length=4)] | None


class ModelRequest(Request):
    model: str


MAX_CHOICES = 16  # `n`: choices per request (vLLM sets no bound; one request must not take the whole engine)
MAX_LOGPROBS = 20  # vLLM's default max_logprobs


class VllmSampling(BaseModel):
    """vLLM's documented extra sampling parameters (vLLM's "Extra parameters" for chat and completions): vLLM
    versions honour them; vLLM checks their values and answers a 400 that names a bad one."""

    use_beam_search: bool = False
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    length_penalty: float = 1.0
    stop_token_ids: list[int] | None = None
    include_stop_str_in_output: bool = False
    ignore_eos: bool = False
    min_tokens: int = Field(default=0, ge=0)
    skip_special_tokens: bool = True
    spaces_between_special_tokens: bool = True
    truncate_prompt_tokens: int | None = Field(default=None, ge=-1)
    prompt_logprobs: int | None = Field(default=None, ge=-1)
    allowed_token_ids: list[int] | None = None
    bad_words: list[str] | None = None
    structured_outputs: dict[str, JsonValue] | None = None
    add_special_tokens: bool | None = None
    return_tokens_as_token_ids: bool | None = None
    return_token_ids: bool | None = None
    cache_salt: str | None = None
    request_id: str | None = None
    vllm_xargs: dict[str, JsonValue] | None = None


class SamplingFields(VllmSampling, ModelRequest):
    """Fields shared by chat and text completions, with the spec's defaults and ranges."""

    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, ge=0.0, le=1.0)
    presence_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    seed: int | None = Field(default=None, ge=-(2**63), le=2**63 - 1)
    n: int = Field(default=1, ge=1, le=MAX_CHOICES)
    stop: Stop = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    logit_bias: dict[str, Annotated[float, Field(ge=-100, le=100)]] | None = None
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
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_LOGPROBS)
    response_format: ResponseFormat | None = None
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool = True
    functions: Annotated[JsonValue, _only("functions (deprecated; use tools)")] = None
    function_call: Annotated[JsonValue, _only("function_call (deprecated; use tool_choice)", "none", "auto")] = None
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
    # vLLM's extra parameters for chat
    echo: bool = False
    add_generation_prompt: bool = True
    continue_final_message: bool = False
    documents: list[dict[str, str]] | None = None
    chat_template_kwargs: dict[str, JsonValue] | None = None
    include_reasoning: bool = True
    thinking_token_budget: int | None = None

    @field_validator("tools")
    @classmethod
    def _distinct_names(cls, tools: list[Tool] | None) -> list[Tool] | None:
        names = [tool.function.name for tool in tools or []]
        if len(set(names)) != len(names):
            raise _invalid(f"tools has two functions of the same name: {sorted(names)}")
        return tools

    @field_validator("tool_choice")
    @classmethod
    def _among_tools(cls, choice: Any, info: ValidationInfo) -> Any:
        names = [tool.function.name for tool in info.data.get("tools") or []]
        if (choice == "required" or isinstance(choice, NamedToolChoice)) and not names:
            raise _invalid("tool_choice needs tools: no tools were given")
        if isinstance(choice, NamedToolChoice) and choice.function.name not in names:
            raise _invalid(
                f"tool_choice names the function {choice.function.name!r}, which is not among the tools {names}"
            )
        return choice

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def template_messages(self) -> list[dict[str, Any]]:
        return [m.for_template() for m in self.messages]

    def template_tools(self) -> list[dict[str, Any]] | None:
        """The tools as the chat template renders them (none when the client turned them off)."""
        if not self.tools or self.tool_choice == "none":
            return None
        return [tool.model_dump(exclude_none=True) for tool in self.tools]


TokenIds = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]


def _entries(value: str | list[str] | list[int] | list[list[int]]) -> list[str | list[int]]:
    """A prompt or input field (a text, texts, token ids, or lists of them) as one entry per text or id list."""
    if isinstance(value, str):
        return [value]
    if all(isinstance(item, int) for item in value):
        return [list(value)]  # type: ignore[arg-type]
    return list(value)  # type: ignore[arg-type]


Prompt = str | Annotated[list[str], Field(min_length=1)] | TokenIds | Annotated[list[TokenIds], Field(min_length=1)]


class CompletionRequest(SamplingFields):
    prompt: Prompt
    max_tokens: int = Field(default=16, ge=0)
    echo: bool = False
    best_of: Annotated[int, Field(ge=0, le=20), _only("best_of other than 1", 1)] = 1
    logprobs: int | None = Field(default=None, ge=0, le=MAX_LOGPROBS)
    suffix: Annotated[str | None, _only("suffix")] = None
    response_format: ResponseFormat | None = None  # vLLM's extra parameter for completions

    def prompts(self) -> list[str | list[int]]:
        """One entry per prompt: a text, or token ids."""
        return _entries(self.prompt)

    def prompt_text(self) -> str:
        """The one text prompt (engines that serve only that are kept from other prompts by the capability check)."""
        first = self.prompts()[0]
        if not isinstance(first, str):
            raise ValueError("the prompt is token ids, not text")
        return first

    def requested_max_tokens(self) -> int | None:
        return self.max_tokens


class EmbeddingRequest(ModelRequest):
    """`input` is a text, texts, token ids (of the model's own tokenizer, as vLLM takes them), or lists of them."""

    input: str | list[str] | TokenIds | list[TokenIds]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = None  # accepted, ignored: an end-user id for abuse monitoring

    @field_validator("input", mode="before")
    @classmethod
    def _one_kind(cls, value: Any) -> Any:
        if (
            isinstance(value, list)
            and value
            and not (
                all(isinstance(item, str) for item in value)
                or all(type(item) is int for item in value)
                or all(isinstance(item, list) and item and all(type(i) is int for i in item) for item in value)
            )
        ):
            raise _invalid("input must be a string, a list of strings, a list of token ids, or a list of such lists")
        if not isinstance(value, str | list):
            raise _invalid("input must be a string or a list of strings")
        return value

    @field_validator("input")
    @classmethod
    def _non_empty(cls, value: Any) -> Any:
        if value == []:
            raise _invalid("input must not be an empty list")
        if value == "" or (isinstance(value, list) and "" in value):
            raise _invalid("input must not contain empty strings")
        return value

    def inputs(self) -> list[str | list[int]]:
        """One entry per input: a text, or token ids."""
        return _entries(self.input)


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


class AnswerUsage(BaseModel):
    model_config = ConfigDict(extra="allow")

    prompt_tokens: int
    completion_tokens: int = 0
    total_tokens: int


class EngineAnswer(BaseModel):
    """An engine's own OpenAI answer (vLLM's server's), relayed as the engine gave it: every field it sent stays."""

    model_config = ConfigDict(extra="allow")

    usage: AnswerUsage | None = None


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
    parent: str | None = None  # for a LoRA adapter, its base model (as vLLM's server lists adapters)


class ModelList(Response):
    object: Literal["list"] = "list"
    data: list[ModelCard]
