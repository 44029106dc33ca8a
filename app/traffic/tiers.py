"""Token-aware tiers: the exact prompt + max_tokens count picks the smallest tier that fits."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from app.config import TierConfig
from app.errors import ContextLengthExceeded, ModelNotFound, ServiceUnavailable


def choose_tier(
    tiers: Sequence[TierConfig],
    needed: Callable[[str], int],
    context_of: Callable[[str], int],
    can_serve: Callable[[str], bool],
) -> tuple[TierConfig, int]:
    """The first tier whose bound takes `needed(model)` tokens; a tier whose model cannot take the request (context
    too short, breaker open, no replica) falls through to the next larger one. Returns the tier and the count."""
    if not tiers:
        raise ModelNotFound("No tiers are configured, so automatic routing has no model to choose.", param="model")
    counts: dict[str, int] = {}

    def count(model: str) -> int:
        if model not in counts:
            counts[model] = needed(model)
        return counts[model]

    start = next(
        (i for i, t in enumerate(tiers) if t.max_tokens is None or count(t.model) <= t.max_tokens), len(tiers) - 1
    )
    unavailable: list[str] = []
    too_long: list[str] = []
    for tier in tiers[start:]:
        n = count(tier.model)
        if n > context_of(tier.model):
            too_long.append(f"{tier.name} ({tier.model}: {context_of(tier.model)} tokens)")
        elif not can_serve(tier.model):
            unavailable.append(tier.name)
        else:
            return tier, n
    if unavailable:
        raise ServiceUnavailable(f"No tier can serve the request now: {', '.join(unavailable)} unavailable.")
    largest = tiers[-1]
    raise ContextLengthExceeded(
        f"The request needs {count(largest.model)} tokens (prompt + max_tokens), more than any tier takes: "
        f"{', '.join(too_long)}.",
        param="messages",
    )
