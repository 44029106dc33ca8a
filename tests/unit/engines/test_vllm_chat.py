import pytest

from app.engines.vllm_chat import finish_reason
from app.errors import ServiceUnavailable


def test_open_outputs_have_no_finish_reason() -> None:
    assert finish_reason(False, None) is None


@pytest.mark.parametrize("reason", ["stop", "length"])
def test_stop_and_length_pass_through(reason: str) -> None:
    assert finish_reason(True, reason) == reason


@pytest.mark.parametrize("reason", ["abort", "error", None])
def test_an_aborted_or_failed_request_is_a_503_not_a_stop(reason: str | None) -> None:
    with pytest.raises(ServiceUnavailable, match="ended the request early"):
        finish_reason(True, reason)
