"""The ingress's policy pipeline, in process: rewrite -> parse -> tier -> experiment / split. Its output, a Plan,
names the model and how to pick its version; the ingress then makes the one hop (with retries)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from app.config import GraphConfig, ModelConfig
from app.endpoints import Endpoint
from app.engines.base import Tokenizer
from app.errors import InvalidRequest, ModelNotFound, ModelNotSupported, NotFound, invalid_value
from app.protocol import ChatCompletionRequest, CompletionRequest, ModelRequest
from app.serving.capabilities import fields_beyond
from app.serving.completion_as_chat import AS_SERVED, AnswerShape, CompletionFromChat, as_chat
from app.traffic.rewrite import apply_rules
from app.traffic.tiers import choose_tier


@dataclass(frozen=True)
class Plan:
    endpoint: Endpoint  # what serves it
    body: ModelRequest  # what the replica serves
    model: ModelConfig
    shape: AnswerShape = AS_SERVED  # how its answer reaches the client
    tier: str | None = None
    pinned: str | None = None  # version pinned by an experiment
    experiment: str | None = None
    user: str | None = None
    rules: list[str] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)  # the request's headers after the rewrite rules
    unable: frozenset[str] = frozenset()  # versions whose engine cannot serve this request

    @property
    def stream(self) -> bool:
        return bool(getattr(self.body, "stream", False))


CountTokens = Callable[[str, ModelRequest], int]
"""Tokens a request needs on a model: its prompt under the model's own template, plus max_tokens."""


class Planner:
    def __init__(self, config: GraphConfig, count_tokens: CountTokens, can_serve: Callable[[str], bool]) -> None:
        self._config = config
        self._count = count_tokens
        self._can_serve = can_serve

    def plan(self, path: str, headers: Mapping[str, str], data: Any) -> Plan:
        routing = self._config.routing
        original = data.get("model") if isinstance(data, dict) else None
        view = apply_rules(routing.rules, path, headers, original if isinstance(original, str) else None)
        if isinstance(data, dict) and view.model != original:
            data = {**data, "model": view.model}
        served = Endpoint.for_path(view.path)
        asked = Endpoint.for_path(path) or served
        if served is None or asked is None:
            raise NotFound(f"No route for POST {view.path}.")
        completion_as_chat = asked is Endpoint.COMPLETION and served is Endpoint.CHAT
        if asked is not served and not completion_as_chat:
            raise InvalidRequest(f"A rewrite rule sends {asked.path} to {served.path}, which cannot serve it.")
        try:
            body = asked.schema.model_validate(data)
        except ValidationError as exc:
            raise invalid_value(exc, data) from exc
        shape: AnswerShape = AS_SERVED
        if isinstance(body, CompletionRequest) and completion_as_chat:
            shape, body = CompletionFromChat(body), as_chat(body)
        tier = None
        if body.model == routing.auto_model and served.generates:
            chosen, _ = choose_tier(
                routing.tiers,
                lambda name: self._count(name, body),
                lambda name: self._model(name, served).serving_version.max_model_len,
                self._can_serve,
            )
            tier, body = chosen.name, body.model_copy(update={"model": chosen.model})
        model = self._model(body.model, served)
        experiment = view.headers.get(routing.experiment_header)
        pinned = None
        if experiment is not None:
            pin = routing.experiments.get(experiment)
            if pin is None:
                raise InvalidRequest(
                    f"Unknown experiment '{experiment}'; configured: {sorted(routing.experiments)}.",
                    param=routing.experiment_header,
                )
            pinned = pin.version if pin.model == model.name else None
        user = getattr(body, "user", None) or view.headers.get(routing.sticky_header)
        unable = _unable(model, body, pinned)
        return Plan(served, body, model, shape, tier, pinned, experiment, user, view.applied, view.headers, unable)

    def _model(self, name: str, endpoint: Endpoint) -> ModelConfig:
        model = self._config.model(name)
        if model is None:
            raise ModelNotFound(f"The model '{name}' does not exist.", param="model")
        if model.role is not endpoint.role:
            raise ModelNotSupported(
                f"The model '{name}' is a {model.role.value} model; {endpoint.path} needs a {endpoint.role.value} "
                "model.",
                param="model",
            )
        return model


def _unable(model: ModelConfig, body: ModelRequest, pinned: str | None) -> frozenset[str]:
    """The versions that cannot serve `body`; a 400 naming the fields when none can, or the pinned one cannot."""
    beyond = {v.version: fields_beyond(v.engine, body) for v in model.versions}
    unable = frozenset(version for version, fields in beyond.items() if fields)
    if not unable:
        return unable
    if pinned in unable or unable == set(beyond):
        who = [pinned] if pinned in unable else sorted(unable)
        fields = sorted({f for version in who for f in beyond[version or ""]})
        engines = ", ".join(f"{v.version} ({v.engine.value})" for v in model.versions if v.version in who)
        raise InvalidRequest(
            f"'{fields[0]}' cannot be served by {'the pinned version' if pinned in unable else 'any version'} of "
            f"model '{model.name}': {engines} does not serve {fields}. vLLM versions serve them.",
            param=fields[0],
        )
    return unable


def tokens_needed(tokenizer: Tokenizer, body: ModelRequest) -> int:
    """Prompt tokens under the model's own tokenizer (chat template applied, tools as the template renders them)
    plus the requested max_tokens; for several prompts, the longest."""
    if isinstance(body, ChatCompletionRequest):
        prompt = len(tokenizer.render_chat(body.template_messages(), body.template_tools()))
        return prompt + (body.requested_max_tokens() or 0)
    if isinstance(body, CompletionRequest):
        lengths = [len(p) if isinstance(p, list) else len(tokenizer.encode(p)) for p in body.prompts()]
        return max(lengths) + (body.requested_max_tokens() or 0)
    return 0
