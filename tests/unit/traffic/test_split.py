import random

import pytest

from app.traffic.split import choose_version

ORDER = ["canary", "stable"]


def test_share_over_10000_users_is_within_a_point() -> None:
    rng = random.Random(0)
    for canary in (1.0, 10.0, 25.0, 50.0):
        weights = {"canary": canary, "stable": 100 - canary}
        hits = sum(choose_version("m", weights, f"user-{i}", rng, ORDER) == "canary" for i in range(10_000))
        assert abs(hits / 100 - canary) <= 1.0, (canary, hits)


def test_sticky_while_weights_stand_and_monotone_as_they_rise() -> None:
    rng = random.Random(1)
    w10 = {"canary": 10.0, "stable": 90.0}
    w25 = {"canary": 25.0, "stable": 75.0}
    users = [f"u{i}" for i in range(2000)]
    first = {u: choose_version("m", w10, u, rng, ORDER) for u in users}
    assert all(choose_version("m", w10, u, rng, ORDER) == first[u] for u in users)
    later = {u: choose_version("m", w25, u, rng, ORDER) for u in users}
    assert all(later[u] == "canary" for u in users if first[u] == "canary")  # nobody moves back


def test_no_user_splits_at_random() -> None:
    rng = random.Random(2)
    picks = [choose_version("m", {"canary": 30.0, "stable": 70.0}, None, rng, ORDER) for _ in range(10_000)]
    assert picks.count("canary") / 100 == pytest.approx(30, abs=1.5)


def test_users_differ_by_model_and_zero_weights() -> None:
    rng = random.Random(3)
    assert choose_version("m", {"canary": 0.0, "stable": 100.0}, "u", rng, ORDER) == "stable"
    assert choose_version("m", {"canary": 100.0, "stable": 0.0}, "u", rng, ORDER) == "canary"
    a = [choose_version("a", {"canary": 50.0, "stable": 50.0}, f"u{i}", rng, ORDER) for i in range(200)]
    b = [choose_version("b", {"canary": 50.0, "stable": 50.0}, f"u{i}", rng, ORDER) for i in range(200)]
    assert a != b
