"""Prefix-cache affinity across the replicas of one model version: send a request where its prompt's prefix was
sent before (so the engine's prefix cache already holds it), unless that replica is busier than the least loaded
one by more than a bound, so a hot prefix cannot pile onto one replica.

The prompt is cut into fixed-size blocks of text and each block is keyed by a hash chained over every block before
it, as vLLM keys its KV blocks by token blocks: a key names a whole prefix, so the longest match is a walk over
the prompt's keys, with no tree. Keys age out after `ttl_s` and the table holds at most `max_entries` (least
recently used first out)."""

from __future__ import annotations

import hashlib
import random
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from app.protocol import ChatCompletionRequest, CompletionRequest

Clock = Callable[[], float]


def prefix_keys(text: str, block_chars: int) -> list[bytes]:
    """One key per whole block of `text`, each naming the text up to the end of its block."""
    keys: list[bytes] = []
    chained = hashlib.blake2b(digest_size=16)
    for end in range(block_chars, len(text) + 1, block_chars):
        chained.update(text[end - block_chars : end].encode("utf-8", "surrogatepass"))
        keys.append(chained.copy().digest())
    return keys


@dataclass(frozen=True)
class Choice:
    ranked: list[str]  # replicas, best first
    matched_blocks: int  # prefix blocks the first one is known to hold
    reason: str  # "prefix", "least-loaded" or "overloaded"


class PrefixAffinity:
    def __init__(
        self,
        *,
        max_imbalance: int,
        ttl_s: float,
        max_entries: int,
        clock: Clock,
        rng: random.Random,
    ) -> None:
        self._max_imbalance = max_imbalance
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._clock = clock
        self._rng = rng
        self._seen: OrderedDict[tuple[bytes, str], float] = OrderedDict()  # (key, replica) -> last used

    def __len__(self) -> int:
        return len(self._seen)

    def choose(self, keys: Sequence[bytes], loads: Mapping[str, int]) -> Choice:
        """Replicas ranked for a request with these prefix keys, given each candidate's requests in flight."""
        if not loads:
            return Choice([], 0, "least-loaded")
        shuffled = list(loads)
        self._rng.shuffle(shuffled)  # equal loads: a random one, so new prefixes spread as pow2 spreads requests
        by_load = sorted(shuffled, key=lambda r: loads[r])
        lowest = loads[by_load[0]]
        matched = {replica: self._matched(keys, replica) for replica in by_load}
        best = max(by_load, key=lambda r: matched[r])  # the first of the least loaded among equal matches
        if matched[best] == 0:
            return Choice(by_load, 0, "least-loaded")
        if loads[best] - lowest > self._max_imbalance:
            within = [r for r in by_load if loads[r] - lowest <= self._max_imbalance]
            second = max(within, key=lambda r: matched[r])
            reason = "prefix" if matched[second] else "overloaded"
            return Choice([second, *(r for r in by_load if r != second)], matched[second], reason)
        return Choice([best, *(r for r in by_load if r != best)], matched[best], "prefix")

    def record(self, keys: Sequence[bytes], replica: str) -> None:
        """`replica` was sent this prompt: from now on it is taken to hold every block of it."""
        now = self._clock()
        for key in keys:
            entry = (key, replica)
            self._seen[entry] = now
            self._seen.move_to_end(entry)
        while len(self._seen) > self._max_entries:
            self._seen.popitem(last=False)

    def forget(self, replica: str) -> None:
        """A replica is gone: its cache went with it."""
        for entry in [e for e in self._seen if e[1] == replica]:
            del self._seen[entry]

    def _matched(self, keys: Sequence[bytes], replica: str) -> int:
        """Leading blocks that `replica` was sent within the last `ttl_s`; an aged entry is dropped when met."""
        oldest = self._clock() - self._ttl_s
        count = 0
        for key in keys:
            entry = (key, replica)
            used = self._seen.get(entry)
            if used is None:
                break
            if used < oldest:
                del self._seen[entry]
                break
            count += 1
        return count


def request_text(body: object) -> str | None:
    """The text a chat or completion request's prompt starts with, in order; None for anything else (routed by
    load alone)."""
    if isinstance(body, ChatCompletionRequest):
        return "".join(f"<{m.role}>{m.text()}\n" for m in body.messages)
    if isinstance(body, CompletionRequest):
        first = body.prompts()[0]
        return first if isinstance(first, str) else " ".join(map(str, first))
    return None
