"""Traffic policies: retries, breakers, injected faults, canary rollouts, rewrite rules, tiers and experiments."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated

from pydantic import Field, model_validator

from app.config.base import NAME_PATTERN, Strict


class RetryOn(StrEnum):
    SERVER_ERROR = "server-error"
    REPLICA_DEATH = "replica-death"
    TIMEOUT = "timeout"


class RetryConfig(Strict):
    attempts: int = Field(default=2, ge=1, le=10, description="Tries per request, the first included.")
    per_try_timeout_s: float = Field(default=120.0, gt=0, description="Longest wait for one try (streams: first byte).")
    retry_on: list[RetryOn] = Field(
        default_factory=lambda: [RetryOn.SERVER_ERROR, RetryOn.REPLICA_DEATH, RetryOn.TIMEOUT],
        description="Failures that are retried; a stream is retried only before its first byte.",
    )


class BreakerConfig(Strict):
    failure_threshold: int = Field(default=5, ge=1, description="Consecutive failures that open a version's breaker.")
    recovery_time_s: float = Field(default=10.0, gt=0, description="Time open before probes are let through.")
    half_open_probes: int = Field(default=1, ge=1, description="Successful probes that close it again.")


class FaultConfig(Strict):
    """Fault injection, as in a service mesh: for drills and rollout tests, never on by default."""

    abort_percent: float = Field(default=0.0, ge=0, le=100, description="Share of calls that fail with a 500.")
    delay_ms: float = Field(default=0.0, ge=0, le=600_000, description="Delay added to every call.")
    event_delay_ms: float = Field(
        default=0.0, ge=0, le=600_000, description="Delay before each item of a stream after its first event."
    )
    mid_stream_abort_percent: float = Field(
        default=0.0, ge=0, le=100, description="Share of streams that fail (a 500 error event) after their first event."
    )


class CanaryGates(Strict):
    min_requests: int = Field(default=20, ge=1, description="Canary requests in a step before gates are judged.")
    max_error_rate: float = Field(default=0.05, ge=0, le=1, description="Highest canary error rate.")
    max_p99_ms: float = Field(default=10_000, gt=0, description="Highest canary p99 latency.")
    max_error_rate_increase: float = Field(
        default=0.02, ge=0, le=1, description="Most the canary's error rate may exceed the stable version's."
    )
    max_p99_ratio: float = Field(
        default=2.0, gt=0, description="Most the canary's p99 may be, as a multiple of stable's."
    )
    max_replicas_lost: int = Field(
        default=2,
        ge=0,
        description="Most canary replicas lost in a step (died or unreachable: a crash, a node's loss). Each counts "
        "once; its failed calls, retried elsewhere, are not canary errors.",
    )


class RolloutConfig(Strict):
    """Progressive delivery of a canary version: step its weight up while its gates hold, roll back when not."""

    canary: str = Field(description="The version being rolled out; the model's default_version is the stable one.")
    steps: list[float] = Field(
        default_factory=lambda: [10.0, 25.0, 50.0, 75.0, 100.0], min_length=1, description="Canary weights, in %."
    )
    step_duration_s: float = Field(default=60.0, gt=0, description="Pause at each step before its gates are judged.")
    gates: CanaryGates = Field(default_factory=CanaryGates, description="What a step must show to go on.")
    auto_start: bool = Field(default=True, description="Start stepping at startup (else wait for `resume`).")

    @model_validator(mode="after")
    def _increasing(self) -> RolloutConfig:
        if any(not 0 < w <= 100 for w in self.steps) or self.steps != sorted(set(self.steps)):
            raise ValueError(f"steps must rise strictly within (0, 100] (got {self.steps})")
        return self


class HeaderMatch(Strict):
    """How one header must look: exactly one of exact, prefix or regex."""

    exact: str | None = Field(default=None, description="The whole value.")
    prefix: str | None = Field(default=None, description="The value starts with this.")
    regex: str | None = Field(default=None, description="The value matches this regular expression (fullmatch).")

    @model_validator(mode="after")
    def _one(self) -> HeaderMatch:
        given = [k for k in ("exact", "prefix", "regex") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of exact, prefix or regex (got {given or 'none'})")
        if self.regex is not None:
            try:
                re.compile(self.regex)
            except re.error as exc:
                raise ValueError(f"regex {self.regex!r} does not compile: {exc}") from None
        return self


class RuleMatch(Strict):
    path_prefix: str | None = Field(default=None, description="The request path starts with this.")
    headers: dict[str, HeaderMatch] = Field(default_factory=dict, description="Headers that must all match.")
    model: str | None = Field(default=None, description="The body's `model` field equals this.")


class RuleActions(Strict):
    rewrite_path: str | None = Field(
        default=None, description="Replaces the matched path_prefix (or the whole path when none is matched)."
    )
    set_model: str | None = Field(default=None, description="Replaces the body's `model`.")
    add_headers: dict[str, str] = Field(default_factory=dict, description="Headers set on the request.")
    remove_headers: list[str] = Field(default_factory=list, description="Headers dropped from the request.")


class RewriteRule(Strict):
    """One interception rule; every rule that matches applies, in order, to the request as rewritten so far."""

    name: Annotated[str, Field(pattern=NAME_PATTERN, description="Shown in the x-rewrite header when it applies.")]
    match: RuleMatch = Field(description="When the rule applies (all given conditions).")
    actions: RuleActions = Field(description="What it changes.")


class TierConfig(Strict):
    name: Annotated[str, Field(pattern=NAME_PATTERN, description="Tier label, shown in x-route-tier.")]
    model: str = Field(description="The chat model this tier sends to.")
    max_tokens: int | None = Field(
        default=None, ge=1, description="Largest prompt + max_tokens this tier takes; none: no bound (last tier)."
    )


class ExperimentConfig(Strict):
    model: str = Field(description="The model the experiment belongs to.")
    version: str = Field(description="The version it pins.")


class RoutingConfig(Strict):
    """Traffic policies that the ingress runs in-process: rewrite rules, token-aware tiers, splits."""

    rules: list[RewriteRule] = Field(default_factory=list, description="Rewrite rules, applied in order.")
    auto_model: str = Field(default="auto", description="The `model` name that routes by tier.")
    tiers: list[TierConfig] = Field(default_factory=list, description="Tiers, smallest first.")
    sticky_header: str = Field(
        default="x-user-id", description="Header that keys sticky splits when the body has no `user`."
    )
    experiment_header: str = Field(default="x-experiment", description="Header that names an experiment.")
    experiments: dict[str, ExperimentConfig] = Field(
        default_factory=dict, description="Header experiments: name -> the model version it pins."
    )
    sync_interval_s: float = Field(
        default=0.25, gt=0, le=5, description="How often each ingress reports to and pulls weights from rollouts."
    )

    @model_validator(mode="after")
    def _tiers_rise(self) -> RoutingConfig:
        bounds = [t.max_tokens for t in self.tiers]
        if any(b is None for b in bounds[:-1]):
            raise ValueError("only the last tier may leave max_tokens unbounded")
        given = [b for b in bounds if b is not None]
        if given != sorted(set(given)):
            raise ValueError(f"tier max_tokens must rise strictly (got {bounds})")
        return self
