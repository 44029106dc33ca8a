import pytest
from pydantic import ValidationError

from app.config import HeaderMatch, RetryConfig, RetryOn, RolloutConfig, RoutingConfig, TierConfig


def test_rollout_steps_rise_within_a_hundred() -> None:
    assert RolloutConfig(canary="v2").steps == [10.0, 25.0, 50.0, 75.0, 100.0]
    for steps in ([50.0, 25.0], [10.0, 10.0], [0.0, 50.0], [50.0, 150.0]):
        with pytest.raises(ValidationError, match="steps must rise strictly within"):
            RolloutConfig(canary="v2", steps=steps)


def test_header_match_takes_exactly_one_compiling_test() -> None:
    assert HeaderMatch(prefix="Bearer ").prefix == "Bearer "
    with pytest.raises(ValidationError, match=r"exactly one of exact, prefix or regex \(got none\)"):
        HeaderMatch()
    with pytest.raises(ValidationError, match=r"got \['exact', 'regex'\]"):
        HeaderMatch(exact="a", regex="a")
    with pytest.raises(ValidationError, match=r"regex '\(' does not compile"):
        HeaderMatch(regex="(")


def test_tiers_rise_and_only_the_last_is_unbounded() -> None:
    small, large = TierConfig(name="small", model="s", max_tokens=1000), TierConfig(name="large", model="l")
    assert RoutingConfig(tiers=[small, large]).tiers[-1].max_tokens is None
    with pytest.raises(ValidationError, match="only the last tier may leave max_tokens unbounded"):
        RoutingConfig(tiers=[large, small])
    with pytest.raises(ValidationError, match=r"tier max_tokens must rise strictly \(got \[1000, 1000\]\)"):
        RoutingConfig(tiers=[small, small])


def test_every_failure_kind_is_retried_by_default() -> None:
    assert set(RetryConfig().retry_on) == set(RetryOn)
