"""Ray's failures at a handle call, as the ingress sees them: the OpenAI error, and the replica that was lost."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from ray.exceptions import ActorUnavailableError, RayActorError

from app.errors import ServiceUnavailable, UpstreamTimeout
from deployments.errors import call, lost_replica, translate


async def fail(exc: BaseException) -> None:
    raise exc


def test_a_dead_replica_is_a_503_that_names_the_replica() -> None:
    with pytest.raises(ServiceUnavailable) as raised:
        asyncio.run(call(fail(RayActorError(actor_id="a1b2")), timeout_s=5))
    assert lost_replica(raised.value) == "a1b2"  # the translated error still knows which replica died
    assert lost_replica(RayActorError(actor_id="c3")) == "c3"


def test_other_failures_name_no_replica() -> None:
    with pytest.raises(UpstreamTimeout) as raised:
        asyncio.run(call(asyncio.sleep(1), timeout_s=0.01))
    assert lost_replica(raised.value) is None
    assert lost_replica(RayActorError()) is None  # Ray did not say which actor
    assert lost_replica(ValueError("bad")) is None


def test_unavailable_replica_is_a_503() -> None:
    assert isinstance(translate(ActorUnavailableError("gone", None)), ServiceUnavailable)


def test_a_grpc_transport_fault_is_a_503() -> None:
    fault = grpc.aio.AioRpcError(grpc.StatusCode.INTERNAL, grpc.aio.Metadata(), grpc.aio.Metadata(), "stream reset")
    assert isinstance(translate(fault), ServiceUnavailable)
    assert lost_replica(fault) is None
