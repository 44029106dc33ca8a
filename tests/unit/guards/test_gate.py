from pathlib import Path

import pytest

from app.config import Priority, load_config
from app.errors import Forbidden, InvalidRequest, RateLimited, Unauthorized
from app.guards.gate import Gate
from app.protocol import ChatCompletionRequest

ROOT = str(Path(__file__).resolve().parents[3])
MODEL = {
    "name": "m",
    "role": "chat",
    "queue": {"max_in_flight": 1, "realtime_max_in_flight": 5},
    "versions": [{"version": "v1", "engine": "transformers", "weights": {"path": ROOT}}],
}


def gate(**guards: object) -> Gate:
    config = load_config({"models": [MODEL], "guards": guards})
    return Gate(config, env={"INFERENCE_GRAPH_API_KEYS": "client", "INFERENCE_GRAPH_ADMIN_KEYS": "admin"})


def test_open_by_default() -> None:
    g = gate()
    assert g.caller({}) is None and g.caller({}, admin=True) is None
    assert (
        g.cache is None
        and g.key(
            "m",
            "v1",
            "/v1/chat/completions",
            ChatCompletionRequest.model_validate(
                {"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": 0}
            ),
        )
        is None
    )


def test_keys_admin_and_limits() -> None:
    g = gate(auth={"enabled": True, "requests_per_minute": 1})
    with pytest.raises(Unauthorized):
        g.caller({})
    assert g.caller({"authorization": "Bearer client"}) is not None
    with pytest.raises(RateLimited):
        g.caller({"authorization": "Bearer client"})
    with pytest.raises(Forbidden):
        g.caller({"authorization": "Bearer client"}, admin=True)
    assert g.caller({"authorization": "Bearer admin"}, admin=True) is not None


def test_priority_header() -> None:
    g = gate(default_priority="batch")
    assert g.priority({}) is Priority.BATCH
    assert g.priority({"x-priority": "Realtime"}) is Priority.REALTIME
    with pytest.raises(InvalidRequest) as err:
        g.priority({"x-priority": "urgent"})
    assert err.value.param == "x-priority"


def test_admission_uses_the_models_queue_bounds() -> None:
    g = gate()
    model = load_config({"models": [MODEL]}).models[0]
    with g.admission.admit(model.name, Priority.BATCH, model.queue):
        with pytest.raises(RateLimited):
            g.admission.enter(model.name, Priority.BATCH, model.queue)
        g.admission.enter(model.name, Priority.REALTIME, model.queue)
        assert g.admission.depth(model.name, Priority.REALTIME) == 1
