from app.config import RewriteRule
from app.traffic.rewrite import apply_rules


def rule(name: str, match: dict, actions: dict) -> RewriteRule:
    return RewriteRule.model_validate({"name": name, "match": match, "actions": actions})


COMPLETIONS_AS_CHAT = rule(
    "completions-as-chat",
    {"path_prefix": "/v1/completions", "headers": {"x-model-type": {"exact": "chat"}}},
    {"rewrite_path": "/v1/chat/completions"},
)
LEGACY_PREFIX = rule("legacy-prefix", {"path_prefix": "/openai/v1/"}, {"rewrite_path": "/v1/"})


def test_unmatched_requests_pass_unchanged() -> None:
    view = apply_rules([COMPLETIONS_AS_CHAT], "/v1/completions", {"X-Other": "1"}, "m")
    assert (view.path, view.model, view.applied) == ("/v1/completions", "m", [])
    assert view.headers == {"x-other": "1"}


def test_header_match_rewrites_the_path() -> None:
    view = apply_rules([COMPLETIONS_AS_CHAT], "/v1/completions", {"X-Model-Type": "chat"}, "m")
    assert view.path == "/v1/chat/completions"
    assert view.applied == ["completions-as-chat"]


def test_rules_chain_in_order() -> None:
    view = apply_rules([LEGACY_PREFIX, COMPLETIONS_AS_CHAT], "/openai/v1/completions", {"x-model-type": "chat"}, "m")
    assert view.path == "/v1/chat/completions"
    assert view.applied == ["legacy-prefix", "completions-as-chat"]
    reversed_order = apply_rules(
        [COMPLETIONS_AS_CHAT, LEGACY_PREFIX], "/openai/v1/completions", {"x-model-type": "chat"}, "m"
    )
    assert reversed_order.path == "/v1/completions"


def test_prefix_regex_model_and_header_actions() -> None:
    r = rule(
        "pin",
        {"model": "gpt-4o", "headers": {"x-team": {"prefix": "search-"}, "x-env": {"regex": "prod|staging"}}},
        {"set_model": "small", "add_headers": {"X-Tagged": "yes"}, "remove_headers": ["x-env"]},
    )
    hit = apply_rules([r], "/v1/chat/completions", {"x-team": "search-ranking", "x-env": "prod"}, "gpt-4o")
    assert hit.model == "small" and hit.headers == {"x-team": "search-ranking", "x-tagged": "yes"}
    assert apply_rules([r], "/p", {"x-team": "search-ranking", "x-env": "production"}, "gpt-4o").applied == []
    assert apply_rules([r], "/p", {"x-team": "ads", "x-env": "prod"}, "gpt-4o").applied == []
    assert apply_rules([r], "/p", {"x-team": "search-x", "x-env": "prod"}, "other").applied == []
