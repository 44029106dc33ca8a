"""A chat replica killed during load (ray.kill on its actor): Ray Serve starts a replacement, every non-streamed
request is retried by the ingress and succeeds, and a stream cut by the death ends with a clean error."""

from __future__ import annotations

import asyncio
import io

import httpx
import pytest

from bench.load import Call, Progress, Sample, run_load
from tests.eventually import eventually, eventually_async
from tests.reliability.conftest import APP_NAME, SOLO, chat_body

pytestmark = pytest.mark.timeout(300)
REQUESTS, CONCURRENCY = 300, 16
STREAM_EVERY = 3  # every third request is streamed


def replica_names() -> set[str]:
    """The live replica actors of SOLO's one version (Serve names them SERVE_REPLICA::app#deployment#id)."""
    import ray

    prefix = f"SERVE_REPLICA::{APP_NAME}#chat-{SOLO}-v1#"
    return {a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith(prefix)}


def call(index: int) -> Call:
    stream = index % STREAM_EVERY == 0
    return Call("/v1/chat/completions", chat_body(SOLO, f"story {index}", max_tokens=24, stream=stream))


async def load_with_a_kill(base: str) -> tuple[list[Sample], str, int]:
    """The samples, the killed replica, and how many requests were still to finish when it was killed."""
    import ray

    (victim,) = replica_names()
    progress = Progress("replica death", REQUESTS, out=io.StringIO())
    load = asyncio.create_task(
        run_load(base, call, requests=REQUESTS, concurrency=CONCURRENCY, duration_s=150, progress=progress)
    )

    def steady() -> None:
        assert progress.done >= 40, f"{progress.done} requests done"

    await eventually_async(steady, what="40 requests of steady load before the kill", timeout_s=60, interval_s=0.05)
    ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
    left = REQUESTS - progress.done
    result = await load
    return result.samples, victim, left


def test_killed_replica_is_replaced_and_unary_requests_succeed(
    reliability_graph: str, capsys: pytest.CaptureFixture[str]
) -> None:
    samples, victim, left = asyncio.run(load_with_a_kill(reliability_graph))
    assert left > CONCURRENCY, "the load was over before the replica died"
    assert [s.index for s in samples] == list(range(REQUESTS))  # every request got exactly one answer
    unary = [s for s in samples if s.index % STREAM_EVERY]
    streams = [s for s in samples if s.index % STREAM_EVERY == 0]
    assert [(s.index, s.status, s.error) for s in unary if not s.ok] == []
    failed = [s for s in streams if not s.ok]
    for s in failed:  # a clean error: an error event then [DONE] after the first byte, or a 503 before it
        clean_event = s.status == 200 and s.done and s.error is not None and "unavailable" in s.error
        assert clean_event or s.status == 503, s
    with capsys.disabled():
        print(f"\n  replica death: {len(failed)} of {len(streams)} streams failed, each with a clean error")

    def replaced() -> None:
        now = replica_names()
        assert now and victim not in now, f"no replacement for {victim}: {now}"

    eventually(replaced, what=f"a replica to replace {victim}", timeout_s=60, interval_s=0.5)
    after = httpx.post(f"{reliability_graph}/v1/chat/completions", json=chat_body(SOLO), timeout=60)
    assert after.status_code == 200 and after.headers["x-served-by"] == f"{SOLO}@v1"
