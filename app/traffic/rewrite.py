"""Rewrite rules at the ingress: match on path, headers and model; rewrite path, model, headers."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from app.config import HeaderMatch, RewriteRule


@dataclass
class RequestView:
    """What the rules see and change. Header names are lower case."""

    path: str
    headers: dict[str, str]
    model: str | None
    applied: list[str] = field(default_factory=list)


def _header_matches(value: str | None, match: HeaderMatch) -> bool:
    if value is None:
        return False
    if match.exact is not None:
        return value == match.exact
    if match.prefix is not None:
        return value.startswith(match.prefix)
    return re.fullmatch(match.regex or "", value) is not None


def _matches(rule: RewriteRule, view: RequestView) -> bool:
    m = rule.match
    if m.path_prefix is not None and not view.path.startswith(m.path_prefix):
        return False
    if m.model is not None and view.model != m.model:
        return False
    return all(_header_matches(view.headers.get(name.lower()), hm) for name, hm in m.headers.items())


def apply_rules(rules: Sequence[RewriteRule], path: str, headers: Mapping[str, str], model: str | None) -> RequestView:
    """Every matching rule applies, in order, to the request as the rules before it left it."""
    view = RequestView(path=path, headers={k.lower(): v for k, v in headers.items()}, model=model)
    for rule in rules:
        if not _matches(rule, view):
            continue
        a = rule.actions
        if a.rewrite_path is not None:
            prefix = rule.match.path_prefix
            view.path = a.rewrite_path + view.path[len(prefix) :] if prefix else a.rewrite_path
        if a.set_model is not None:
            view.model = a.set_model
        for name in a.remove_headers:
            view.headers.pop(name.lower(), None)
        view.headers.update({k.lower(): v for k, v in a.add_headers.items()})
        view.applied.append(rule.name)
    return view
