import pytest

from app.config import TierConfig
from app.errors import ContextLengthExceeded, ModelNotFound, ServiceUnavailable
from app.traffic.tiers import choose_tier

TIERS = [
    TierConfig(name="small", model="s", max_tokens=1000),
    TierConfig(name="medium", model="m", max_tokens=8000),
    TierConfig(name="large", model="l"),
]
CONTEXT = {"s": 2048, "m": 16384, "l": 131072}


def pick(n: int, up: set[str] | None = None) -> tuple[str, int]:
    tier, count = choose_tier(
        TIERS, lambda model: n, CONTEXT.__getitem__, lambda model: model in (set(CONTEXT) if up is None else up)
    )
    return tier.name, count


def test_thresholds() -> None:
    assert pick(1000) == ("small", 1000)
    assert pick(1001) == ("medium", 1001)
    assert pick(8000) == ("medium", 8000)
    assert pick(8001) == ("large", 8001)


def test_unavailable_tier_falls_through_to_the_next_larger() -> None:
    assert pick(10, up={"m", "l"}) == ("medium", 10)
    assert pick(10, up={"l"}) == ("large", 10)
    with pytest.raises(ServiceUnavailable):
        pick(10, up=set())


def test_counts_use_each_models_own_tokenizer() -> None:
    counts = {"s": 1200, "m": 900, "l": 900}  # the small model's tokenizer needs more tokens
    tier, n = choose_tier(TIERS, counts.__getitem__, CONTEXT.__getitem__, lambda model: True)
    assert (tier.name, n) == ("medium", 900)


def test_too_long_for_every_tier() -> None:
    with pytest.raises(ContextLengthExceeded, match="200000 tokens"):
        pick(200_000)


def test_no_tiers_is_a_client_error() -> None:
    with pytest.raises(ModelNotFound) as err:
        choose_tier([], lambda model: 1, CONTEXT.__getitem__, lambda model: True)
    assert err.value.status == 404 and err.value.param == "model"
