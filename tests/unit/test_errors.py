import json

import pytest
from pydantic import ValidationError

from app.errors import ContextLengthExceeded, ModelNotFound, PayloadTooLarge, to_error_info
from app.protocol import ChatCompletionRequest


def test_openai_errors_keep_status_and_code() -> None:
    info = to_error_info(ModelNotFound("The model 'x' does not exist.", param="model"))
    assert (info.status, info.code, info.param) == (404, "model_not_found", "model")
    assert info.body() == {
        "error": {
            "message": "The model 'x' does not exist.",
            "type": "invalid_request_error",
            "param": "model",
            "code": "model_not_found",
        }
    }
    assert to_error_info(ContextLengthExceeded("too long")).status == 400
    assert to_error_info(PayloadTooLarge("big")).status == 413


def test_validation_error_names_the_field() -> None:
    with pytest.raises(ValidationError) as err:
        ChatCompletionRequest.model_validate(
            {"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 5}
        )
    info = to_error_info(err.value)
    assert info.status == 400
    assert info.param == "temperature"
    assert "temperature" in info.message


def test_bad_json_and_encoding_are_client_errors() -> None:
    with pytest.raises(json.JSONDecodeError) as bad:
        json.loads("{")
    assert to_error_info(bad.value).status == 400
    with pytest.raises(UnicodeDecodeError) as undecodable:
        b"\xff".decode()
    assert to_error_info(undecodable.value).status == 400
    assert to_error_info(RecursionError()).status == 400


def test_timeout_and_unknown_failures() -> None:
    assert to_error_info(TimeoutError()).status == 504
    info = to_error_info(KeyError("secret detail"))
    assert info.status == 500
    assert "secret detail" not in info.message
