from pathlib import Path

import pytest

from app.config import load_config
from app.endpoints import Endpoint
from app.errors import InvalidRequest, ModelNotFound, ModelNotSupported, NotFound
from app.protocol import ChatCompletionRequest, CompletionRequest
from app.serving.completion_as_chat import AS_SERVED, CompletionFromChat
from app.traffic.plan import Planner

ROOT = str(Path(__file__).resolve().parents[3])


def version(label: str) -> dict[str, object]:
    return {"version": label, "engine": "transformers", "weights": {"path": ROOT}, "max_model_len": 100}


CONFIG = load_config(
    {
        "models": [
            {"name": "small", "role": "chat", "versions": [version("v1"), version("v2")]},
            {"name": "big", "role": "chat", "versions": [{**version("v1"), "max_model_len": 10_000}]},
            {
                "name": "emb",
                "role": "embedding",
                "versions": [{"version": "v1", "engine": "sentence-transformers", "weights": {"path": ROOT}}],
            },
        ],
        "routing": {
            "rules": [
                {
                    "name": "as-chat",
                    "match": {"path_prefix": "/v1/completions", "headers": {"x-t": {"exact": "c"}}},
                    "actions": {"rewrite_path": "/v1/chat/completions"},
                },
                {"name": "alias", "match": {"model": "gpt"}, "actions": {"set_model": "small"}},
            ],
            "tiers": [{"name": "s", "model": "small", "max_tokens": 50}, {"name": "l", "model": "big"}],
            "experiments": {"next": {"model": "small", "version": "v2"}},
        },
    }
)


def planner(counted: list[tuple[str, str]] | None = None, up: bool = True) -> Planner:
    def count(model: str, body: object) -> int:
        if counted is not None:
            counted.append((model, type(body).__name__))
        messages = getattr(body, "messages", None)
        return len(messages[0].text()) if messages else len(str(getattr(body, "prompt", "")))

    return Planner(CONFIG, count, lambda model: up)


def chat(content: str = "hi", model: str = "small", **extra: object) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


def test_plain_request() -> None:
    plan = planner().plan("/v1/chat/completions", {}, chat(user="u1"))
    assert (plan.endpoint, plan.model.name, plan.tier, plan.pinned, plan.user) == (
        Endpoint.CHAT,
        "small",
        None,
        None,
        "u1",
    )


def test_sticky_header_and_experiment() -> None:
    plan = planner().plan("/v1/chat/completions", {"X-User-Id": "h", "x-experiment": "next"}, chat())
    assert (plan.user, plan.pinned, plan.experiment) == ("h", "v2", "next")
    with pytest.raises(InvalidRequest, match="Unknown experiment 'nope'"):
        planner().plan("/v1/chat/completions", {"x-experiment": "nope"}, chat())
    other_model = planner().plan("/v1/chat/completions", {"x-experiment": "next"}, chat(model="big"))
    assert other_model.pinned is None


def test_rules_rewrite_endpoint_and_model() -> None:
    counted: list[tuple[str, str]] = []
    plan = planner(counted).plan("/v1/completions", {"x-t": "c"}, {"model": "gpt", "prompt": "p", "max_tokens": 3})
    # served as a chat request, answered in the completion's shape
    assert plan.endpoint is Endpoint.CHAT and isinstance(plan.body, ChatCompletionRequest)
    assert [(m.role, m.content) for m in plan.body.messages] == [("user", "p")] and plan.body.max_tokens == 3
    assert isinstance(plan.shape, CompletionFromChat)
    assert plan.model.name == "small" and plan.rules == ["as-chat", "alias"]
    plain = planner().plan("/v1/completions", {}, {"model": "small", "prompt": "p"})
    assert isinstance(plain.body, CompletionRequest) and plain.shape is AS_SERVED
    auto = planner(counted).plan("/v1/completions", {"x-t": "c"}, {"model": "auto", "prompt": "p"})
    assert auto.tier == "s" and counted[-1] == ("small", "ChatCompletionRequest")


def test_tiers() -> None:
    assert planner().plan("/v1/chat/completions", {}, chat("x", model="auto")).tier == "s"
    long = planner().plan("/v1/chat/completions", {}, chat("x" * 60, model="auto"))
    assert (long.tier, long.model.name, long.body.model) == ("l", "big", "big")


def test_mistakes() -> None:
    with pytest.raises(ModelNotFound):
        planner().plan("/v1/chat/completions", {}, chat(model="nope"))
    with pytest.raises(ModelNotSupported):
        planner().plan("/v1/embeddings", {}, {"model": "small", "input": "x"})
    with pytest.raises(NotFound):
        planner().plan("/v2/other", {}, chat())


MIXED = load_config(
    {
        "models": [
            {
                "name": "m",
                "role": "chat",
                "default_version": "v1",
                "weights": {"v1": 50, "v2": 50},
                "versions": [{**version("v1"), "engine": "vllm"}, version("v2")],
            },
            {"name": "t", "role": "chat", "versions": [version("v1")]},
        ],
        "routing": {"experiments": {"pin-v2": {"model": "m", "version": "v2"}}},
    }
)
TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]


def mixed() -> Planner:
    return Planner(MIXED, lambda model, body: 1, lambda model: True)


@pytest.mark.parametrize(
    "extra",
    [{"tools": TOOLS}, {"logprobs": True}, {"n": 2, "temperature": 1}, {"response_format": {"type": "json_object"}}],
)
def test_a_request_beyond_transformers_is_kept_from_its_versions(extra: dict[str, object]) -> None:
    plan = mixed().plan("/v1/chat/completions", {}, chat(model="m", **extra))
    assert plan.unable == frozenset({"v2"})


def test_a_plain_request_may_go_to_any_version() -> None:
    assert mixed().plan("/v1/chat/completions", {}, chat(model="m", temperature=0)).unable == frozenset()


def test_no_version_able_is_a_400_naming_the_field_and_the_versions() -> None:
    with pytest.raises(InvalidRequest) as err:
        mixed().plan("/v1/chat/completions", {}, chat(model="t", top_k=5))
    assert err.value.param == "top_k" and "v1 (transformers)" in err.value.message


def test_a_pinned_version_that_cannot_serve_is_a_400() -> None:
    with pytest.raises(InvalidRequest) as err:
        mixed().plan("/v1/chat/completions", {"x-experiment": "pin-v2"}, chat(model="m", tools=TOOLS))
    assert err.value.param == "tools" and "pinned" in err.value.message


def test_several_prompts_and_token_ids_need_vllm() -> None:
    for prompt in (["a", "b"], [1, 2, 3], [[1], [2]]):
        plan = mixed().plan("/v1/completions", {}, {"model": "m", "prompt": prompt})
        assert plan.unable == frozenset({"v2"})


def test_union_members_are_not_in_the_param() -> None:
    with pytest.raises(InvalidRequest) as err:
        mixed().plan("/v1/completions", {}, {"model": "m", "prompt": None})
    assert err.value.param == "prompt"
    bad_schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": 5}}}
    with pytest.raises(InvalidRequest) as err:
        mixed().plan("/v1/chat/completions", {}, chat(model="m", response_format=bad_schema))
    assert err.value.param == "response_format.json_schema.schema"


def test_tools_count_as_the_template_renders_them() -> None:
    from app.traffic.plan import tokens_needed
    from tests.fakes import CharTokenizer

    plain = ChatCompletionRequest.model_validate(chat(max_tokens=5))
    with_tools = ChatCompletionRequest.model_validate(chat(max_tokens=5, tools=TOOLS))
    turned_off = ChatCompletionRequest.model_validate(chat(max_tokens=5, tools=TOOLS, tool_choice="none"))
    assert tokens_needed(CharTokenizer(), with_tools) > tokens_needed(CharTokenizer(), plain)
    assert tokens_needed(CharTokenizer(), turned_off) == tokens_needed(CharTokenizer(), plain)
    several = CompletionRequest.model_validate({"model": "m", "prompt": ["ab", "abcd"], "max_tokens": 1})
    assert tokens_needed(CharTokenizer(), several) == 5
    ids = CompletionRequest.model_validate({"model": "m", "prompt": [1, 2, 3], "max_tokens": 1})
    assert tokens_needed(CharTokenizer(), ids) == 4
