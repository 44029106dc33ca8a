"""Weighted, sticky version choice: the same user keeps the same version while the weights stand."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping


def user_point(model: str, user: str) -> float:
    """A stable point in [0, 1) for (model, user): the user's place on the weight line."""
    digest = hashlib.blake2b(f"{model}\0{user}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def choose_version(
    model: str, weights: Mapping[str, float], user: str | None, rng: random.Random, order: list[str]
) -> str:
    """Pick a version by weight. `order` fixes the weight line, canary first, so a growing canary share keeps
    every user it already had (users only move from stable to canary as the weight rises)."""
    total = sum(max(0.0, weights.get(v, 0.0)) for v in order)
    if total <= 0:
        return order[-1]
    point = (user_point(model, user) if user else rng.random()) * total
    edge = 0.0
    for version in order:
        edge += max(0.0, weights.get(version, 0.0))
        if point < edge:
            return version
    return order[-1]
