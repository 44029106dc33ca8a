"""OpenAI-shaped errors and the one mapping from exceptions to them."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from pydantic import BaseModel, ValidationError


class ErrorInfo(BaseModel):
    """An error as a value: what a replica returns, and what the ingress renders as the OpenAI error body."""

    status: int
    message: str
    type: str
    param: str | None = None
    code: str | None = None
    retry_after_s: float | None = None  # sent as the Retry-After header, not in the body

    def body(self) -> dict[str, dict[str, str | None]]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class OpenAIError(Exception):
    """An exception that carries its OpenAI error; subclasses fix status, type and code."""

    status = 500
    type = "server_error"
    code: str | None = None

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param

    def info(self) -> ErrorInfo:
        return ErrorInfo(
            status=self.status,
            message=self.message,
            type=self.type,
            param=self.param,
            code=self.code,
            retry_after_s=getattr(self, "retry_after_s", None),
        )


class InvalidRequest(OpenAIError):
    status = 400
    type = "invalid_request_error"


class ContextLengthExceeded(InvalidRequest):
    code = "context_length_exceeded"


class ModelNotSupported(InvalidRequest):
    code = "model_not_supported"


class ModelNotFound(OpenAIError):
    status = 404
    type = "invalid_request_error"
    code = "model_not_found"


class NotFound(OpenAIError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class PayloadTooLarge(OpenAIError):
    status = 413
    type = "invalid_request_error"
    code = "payload_too_large"


class ServiceUnavailable(OpenAIError):
    status = 503
    type = "server_error"
    code = "service_unavailable"


class Unauthorized(OpenAIError):
    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class Forbidden(OpenAIError):
    status = 403
    type = "invalid_request_error"
    code = "admin_key_required"


class RateLimited(OpenAIError):
    """429: a key over its limits, or a batch request shed because its model's queue is full."""

    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, retry_after_s: float = 1.0, code: str | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        if code is not None:
            self.code = code


class UpstreamTimeout(OpenAIError):
    status = 504
    type = "server_error"
    code = "timeout"


class InvalidValue(InvalidRequest):
    code = "invalid_value"


def invalid_value(exc: ValidationError, data: Any = None) -> InvalidValue:
    """400 naming the first offending field, as OpenAI does (`param` is the field's dotted path). Pydantic's
    location also names the union member it tried (`str`, `list[int]`, a discriminator's tag); with the request
    `data` the path keeps only the keys and indexes that are in it."""
    first = exc.errors()[0]
    param = ".".join(_path(first["loc"], data)) or None
    where = f"'{param}'" if param else "the request body"
    message = f"Invalid value for {where}: {first['msg']}."
    if len(exc.errors()) > 1:
        message += f" ({len(exc.errors()) - 1} more error(s))"
    return InvalidValue(message, param=param)


def _path(loc: tuple[int | str, ...], data: Any) -> list[str]:
    path, node, known = [], data, data is not None
    for part in loc:
        if known:
            in_body = (isinstance(node, dict) and part in node) or (
                isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
            )
            if not in_body:
                continue  # a union member's name or tag
            node = node[part]
        elif isinstance(part, str) and ("[" in part or "-" in part or part in _TYPE_TAGS or part[:1].isupper()):
            continue
        path.append(str(part))
    return path


_TYPE_TAGS = {"str", "int", "float", "bool", "dict", "list", "none"}


def validation_error(exc: ValidationError, data: Any = None) -> ErrorInfo:
    return invalid_value(exc, data).info()


def to_error_info(exc: BaseException) -> ErrorInfo:
    """The one map from an exception to the OpenAI error and HTTP status the client sees."""
    if isinstance(exc, OpenAIError):
        return exc.info()
    if isinstance(exc, ValidationError):
        return validation_error(exc)
    if isinstance(exc, json.JSONDecodeError):
        return InvalidRequest(
            f"The request body is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno}).",
        ).info()
    if isinstance(exc, UnicodeDecodeError):
        return InvalidRequest("The request body is not valid UTF-8.").info()
    if isinstance(exc, RecursionError):
        return InvalidRequest("The request body is nested too deeply.").info()
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return UpstreamTimeout("The model did not answer in time.").info()
    return ErrorInfo(status=500, message="The server had an error while processing your request.", type="server_error")
