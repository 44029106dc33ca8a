"""Ray's failures, seen at a handle call, as the OpenAI errors the client gets."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

import grpc
from ray.exceptions import ActorUnavailableError, RayActorError, RayTaskError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

from app.errors import InvalidRequest, OpenAIError, ServiceUnavailable, UpstreamTimeout

T = TypeVar("T")


def translate(exc: BaseException) -> BaseException:
    """Turn a Ray exception into an app error; anything else passes through to `to_error_info`."""
    if isinstance(exc, BackPressureError):
        return ServiceUnavailable("The model is at capacity; retry shortly.")
    if isinstance(exc, (RayActorError, ActorUnavailableError, DeploymentUnavailableError, grpc.aio.AioRpcError)):
        # gRPC handles raise ActorUnavailableError for a lost replica, and the raw RPC error for other transport faults
        return ServiceUnavailable("The model's replica is unavailable; retry shortly.")
    if isinstance(exc, RayTaskError) and isinstance(exc.cause, OpenAIError):
        return exc.cause
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return UpstreamTimeout("The model did not answer in time.")
    if isinstance(exc, ValueError) and "integer string conversion" in str(exc):  # json.loads: over 4300 digits
        return InvalidRequest("The request body holds an integer with too many digits.")
    return exc


def lost_replica(exc: BaseException) -> str | None:
    """The id of the replica actor whose death or outage failed the call (raised as is or as the cause), else None."""
    for error in (exc, exc.__cause__):
        if isinstance(error, RayActorError) and error.actor_id:
            return str(error.actor_id)
    return None


async def call(awaitable: Awaitable[T], timeout_s: float) -> T:
    try:
        return await asyncio.wait_for(awaitable, timeout_s)
    except Exception as exc:
        raise translate(exc) from exc
