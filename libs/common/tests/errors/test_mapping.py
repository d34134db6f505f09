"""ErrorMapper semantics, status lookups and the public names of mainstay_common.errors."""

from __future__ import annotations

import asyncio

import grpc
import pytest

import mainstay_common.errors
from mainstay_common.errors import (
    AlreadyExists,
    Conflict,
    DependencyTimeout,
    DependencyUnavailable,
    ErrorMapper,
    InvalidArgument,
    InvalidMessage,
    MainstayError,
    NotFound,
    PermanentError,
    PermissionDenied,
    RetryableError,
    RuleViolation,
    Unauthenticated,
    grpc_status_for,
    http_status_for,
)


def test_public_names() -> None:
    assert sorted(mainstay_common.errors.__all__) == [
        "AlreadyExists",
        "BusAction",
        "Conflict",
        "DependencyTimeout",
        "DependencyUnavailable",
        "ErrorMapper",
        "InvalidArgument",
        "InvalidMessage",
        "MainstayError",
        "NotFound",
        "PermanentError",
        "PermissionDenied",
        "RetryableError",
        "RuleViolation",
        "Unauthenticated",
        "describe_validation_error",
        "grpc_status_for",
        "http_status_for",
        "is_retryable",
        "map_asyncpg_data_errors",
        "map_asyncpg_errors",
        "map_grpc_errors",
        "map_httpx_errors",
        "parse_retry_after",
    ]


@pytest.mark.parametrize(
    ("error", "status", "http"),
    [
        (RetryableError, grpc.StatusCode.UNAVAILABLE, 503),
        (DependencyUnavailable, grpc.StatusCode.UNAVAILABLE, 503),
        (DependencyTimeout, grpc.StatusCode.DEADLINE_EXCEEDED, 504),
        (Conflict, grpc.StatusCode.ABORTED, 409),
        (PermanentError, grpc.StatusCode.FAILED_PRECONDITION, 422),
        (InvalidMessage, grpc.StatusCode.INVALID_ARGUMENT, 422),
        (InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT, 400),
        (NotFound, grpc.StatusCode.NOT_FOUND, 404),
        (AlreadyExists, grpc.StatusCode.ALREADY_EXISTS, 409),
        (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED, 401),
        (PermissionDenied, grpc.StatusCode.PERMISSION_DENIED, 403),
        (RuleViolation, grpc.StatusCode.FAILED_PRECONDITION, 422),
    ],
)
def test_status_for_each_error(
    error: type[MainstayError], status: grpc.StatusCode, http: int
) -> None:
    assert grpc_status_for(error("x")) is status
    assert http_status_for(error("x")) == http


def test_foreign_exceptions_are_internal() -> None:
    assert grpc_status_for(ValueError("x")) is grpc.StatusCode.INTERNAL
    assert http_status_for(ValueError("x")) == 500


def _to_not_found(exc: Exception) -> MainstayError | None:
    return NotFound("mapped") if isinstance(exc, LookupError) else None


def test_mapper_chains_the_cause() -> None:
    original = KeyError("k")
    with pytest.raises(NotFound) as caught, ErrorMapper(_to_not_found):
        raise original

    assert caught.value.__cause__ is original


def test_mapper_lets_unknown_and_already_mapped_errors_through() -> None:
    with pytest.raises(ValueError, match="other"), ErrorMapper(_to_not_found):
        raise ValueError("other")

    already = Conflict("inner")
    with pytest.raises(Conflict) as caught, ErrorMapper(lambda _exc: NotFound("no")):
        raise already
    assert caught.value is already


async def test_mapper_never_touches_cancellation() -> None:
    async def work() -> None:
        async with ErrorMapper(lambda _exc: NotFound("no")):
            await asyncio.sleep(30)

    task = asyncio.create_task(work())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_mapper_is_not_a_decorator() -> None:
    # A decorator around an async def would only see the coroutine being created.
    with pytest.raises(TypeError):
        ErrorMapper(_to_not_found)(lambda: None)  # type: ignore[operator]
