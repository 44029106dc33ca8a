import random

from app.protocol import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from app.traffic.prefix_affinity import PrefixAffinity, prefix_keys, request_text
from tests.fakes import ManualClock

SYSTEM = "You are a support agent for a bank. " * 20


def policy(clock: ManualClock | None = None, max_imbalance: int = 4, max_entries: int = 10_000) -> PrefixAffinity:
    return PrefixAffinity(
        max_imbalance=max_imbalance,
        ttl_s=60,
        max_entries=max_entries,
        clock=clock or ManualClock(),
        rng=random.Random(0),
    )


def keys(text: str) -> list[bytes]:
    return prefix_keys(text, 64)


def test_keys_name_whole_prefixes() -> None:
    a, b = keys(SYSTEM + "first question"), keys(SYSTEM + "another one entirely")
    shared = len(SYSTEM) // 64
    assert a[:shared] == b[:shared] and len(a) == len(SYSTEM + "first question") // 64
    assert keys("x" + SYSTEM)[0] != a[0]  # a block's key depends on every block before it
    assert keys("short") == []


def test_the_same_prefix_goes_to_the_same_replica() -> None:
    p = policy()
    first = p.choose(keys(SYSTEM + "q1"), {"a": 0, "b": 0})
    assert first.reason == "least-loaded"
    p.record(keys(SYSTEM + "q1"), first.ranked[0])
    for i in range(20):
        loads = {"a": i % 3, "b": (i + 1) % 3}
        choice = p.choose(keys(SYSTEM + f"question {i}"), loads)
        assert choice.ranked[0] == first.ranked[0] and choice.reason == "prefix"
        assert choice.matched_blocks == len(SYSTEM) // 64


def test_a_new_prefix_goes_to_the_least_loaded() -> None:
    p = policy()
    p.record(keys(SYSTEM), "a")
    choice = p.choose(keys("Unrelated: " * 30), {"a": 1, "b": 3, "c": 0})
    assert choice.ranked == ["c", "a", "b"] and choice.reason == "least-loaded"
    firsts = {p.choose(keys(f"Unrelated {i}: " * 30), {"a": 0, "b": 0, "c": 0}).ranked[0] for i in range(30)}
    assert firsts == {"a", "b", "c"}  # equal loads: new prefixes spread over all of them


def test_an_overloaded_replica_stops_attracting_its_prefixes() -> None:
    p = policy(max_imbalance=2)
    p.record(keys(SYSTEM), "a")
    assert p.choose(keys(SYSTEM + "q"), {"a": 2, "b": 0}).ranked[0] == "a"  # within the bound
    over = p.choose(keys(SYSTEM + "q"), {"a": 3, "b": 0})
    assert over.ranked[0] == "b" and over.reason == "overloaded"
    p.record(keys(SYSTEM), "b")  # now both hold it: the lighter one wins
    assert p.choose(keys(SYSTEM + "q"), {"a": 1, "b": 0}).ranked[0] == "b"


def test_the_longest_match_wins() -> None:
    p = policy()
    p.record(keys(SYSTEM), "a")
    p.record(keys(SYSTEM + "Customer history: " * 10), "b")
    choice = p.choose(keys(SYSTEM + "Customer history: " * 10 + "q"), {"a": 0, "b": 1})
    assert choice.ranked[0] == "b" and choice.matched_blocks > len(SYSTEM) // 64


def test_entries_age_out() -> None:
    clock = ManualClock()
    p = policy(clock)
    p.record(keys(SYSTEM), "a")
    clock.now = 59
    assert p.choose(keys(SYSTEM), {"a": 1, "b": 0}).ranked[0] == "a"
    clock.now = 61 + 59  # the lookup above refreshed nothing: only `record` does
    choice = p.choose(keys(SYSTEM), {"a": 1, "b": 0})
    assert choice.ranked[0] == "b" and choice.reason == "least-loaded"


def test_nothing_grows_without_bound() -> None:
    p = policy(max_entries=500)
    rng = random.Random(0)
    for i in range(2000):
        p.record(keys("".join(rng.choice("abcdef") for _ in range(640))), f"r{i % 4}")
    assert len(p) == 500
    recent = keys("the newest prompt " * 10)
    p.record(recent, "r1")
    assert p.choose(recent, {"r0": 0, "r1": 0}).ranked[0] == "r1"  # the most recent entries are the ones kept


def test_a_replica_that_is_gone_is_forgotten() -> None:
    p = policy()
    p.record(keys(SYSTEM), "a")
    p.forget("a")
    assert len(p) == 0 and p.choose(keys(SYSTEM), {"b": 0}).ranked == ["b"]


def test_no_candidates_no_choice() -> None:
    assert policy().choose(keys(SYSTEM), {}).ranked == []


def test_request_text_of_chat_and_completions_only() -> None:
    chat = ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]}
    )
    assert request_text(chat) == "<system>S\n<user>U\n"
    assert request_text(CompletionRequest(model="m", prompt="P")) == "P"
    assert request_text(EmbeddingRequest(model="m", input="x")) is None
