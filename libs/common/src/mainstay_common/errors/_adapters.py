"""Translate driver errors into the Mainstay error tree at the adapter boundary.

An outbound adapter wraps each driver call in a mapper, which re-raises the most
specific Mainstay error with the driver's exception chained as ``__cause__``::

    with map_asyncpg_errors():
        await conn.execute("INSERT ...", *args)

    async with httpx.AsyncClient(timeout=5) as client:
        with map_httpx_errors("tools-upstream"):
            (await client.get(url)).raise_for_status()

The mappers are plain context managers (``with`` or ``async with``): they only
act on an exception that leaves the block, so they work around awaits. They are
deliberately not decorators, because a decorator wrapping an ``async def``
would only see the coroutine being created, never its failures.

Anything a mapper does not recognise passes through unchanged: an unclassified
exception is already handled as "retry a few times, then dead-letter" by the
bus, INTERNAL by gRPC and 500 by HTTP (see :mod:`mainstay_common.errors._base`).
In particular undefined tables/columns, syntax errors and missing privileges
(SQLSTATE class 42) are left un-mapped on purpose: they mean a bug or a missing
migration, not a bad message. Mapping them to a permanent error would
dead-letter good messages; mapping them to ``DependencyUnavailable`` would hide
a bug behind retries. Left alone they are retried a bounded number of times
(which heals a migration that lands late), then dead-lettered as exhausted, and
gRPC/HTTP callers see INTERNAL/500 with nothing leaked.

Messages name what failed (constraint, table, status, endpoint) but never SQL
parameters, server-side ``DETAIL`` lines (which quote row values), response
bodies or URL query strings (which may carry secrets).

The drivers are imported inside the translators, so importing
:mod:`mainstay_common.errors` from pure domain code pulls in no I/O library.
"""

from __future__ import annotations

import email.utils
import math
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Self

from mainstay_common.errors._base import (
    AlreadyExists,
    Conflict,
    DependencyTimeout,
    DependencyUnavailable,
    InvalidArgument,
    MainstayError,
    NotFound,
    PermissionDenied,
    RuleViolation,
    Unauthenticated,
)

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType

    import grpc
    import httpx

__all__ = [
    "ErrorMapper",
    "grpc_status_for",
    "http_status_for",
    "map_asyncpg_data_errors",
    "map_asyncpg_errors",
    "map_grpc_errors",
    "map_httpx_errors",
]


class ErrorMapper:
    """A context manager that re-raises a translated exception, chaining the original.

    ``translate`` returns the Mainstay error for an exception, or ``None`` to let
    it pass through. A ``MainstayError`` raised inside the block (say, by a nested
    mapper) is never translated again, and ``BaseException``s such as
    cancellation are never touched.
    """

    __slots__ = ("_translate",)

    def __init__(self, translate: Callable[[Exception], MainstayError | None]) -> None:
        self._translate = translate

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not isinstance(exc, Exception) or isinstance(exc, MainstayError):
            return
        mapped = self._translate(exc)
        if mapped is not None:
            raise mapped from exc

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)


# --- status codes ------------------------------------------------------------


def grpc_status_for(exc: BaseException) -> grpc.StatusCode:
    """The gRPC status a server answers for ``exc``: INTERNAL when it is not ours."""
    import grpc  # noqa: PLC0415  (lazy: keeps the error tree free of I/O imports)

    if isinstance(exc, MainstayError):
        return grpc.StatusCode[exc.grpc_status_name]
    return grpc.StatusCode.INTERNAL


def http_status_for(exc: BaseException) -> int:
    """The HTTP status a server answers for ``exc``: 500 when it is not ours."""
    if isinstance(exc, MainstayError):
        return exc.http_status
    return 500


# --- asyncpg -----------------------------------------------------------------

# asyncpg raises these InterfaceErrors when the connection or pool is gone; every
# other InterfaceError is a misuse of the API (a bug), so it stays un-mapped.
_CLOSED_RESOURCE = re.compile(r"\b(connection|pool) (is|was) clos(ed|ing)\b")
# asyncpg raises this InternalClientError when a query is sent on a connection whose
# server ended it while it sat idle in the pool (PostgreSQL shutting down: the
# connection still consumes the server's farewell, and is closed right after).
_BROKEN_PROTOCOL = re.compile(
    r"^cannot switch to state \d+; another operation \(\d+\) is in progress"
)


def map_asyncpg_errors() -> ErrorMapper:
    """Map asyncpg and socket failures, most specific first.

    ===================================================  =====================
    serialization failure, deadlock, lock not available  Conflict
    unique / exclusion violation                         AlreadyExists
    foreign-key / check / not-null violation (class 23)  InvalidArgument
    data exception (class 22), unencodable argument      InvalidArgument
    query canceled (statement timeout), transaction      DependencyTimeout
    timeout, ``TimeoutError`` (asyncpg's ``timeout=``)
    connection exception (class 08), operator            DependencyUnavailable
    intervention (57: shutdown, cannot connect now),
    insufficient resources (53: too many connections),
    read-only transaction (a replica after failover),
    stale cached plan, closed connection/pool, a
    connection ended by the server while idle, OSError
    anything else (class 42 included)                    un-mapped
    ===================================================  =====================
    """
    return ErrorMapper(_translate_asyncpg)


def map_asyncpg_data_errors() -> ErrorMapper:
    """Map only asyncpg's data exceptions (SQLSTATE class 22, and an argument asyncpg cannot
    encode, such as an integer beyond the column's range or a NUL character in text) to
    ``InvalidArgument``, as :func:`map_asyncpg_errors` does; every other error passes.

    For code that runs on a connection it did not open itself, such as a consumer's
    handler in the consumer's transaction: a data exception fails the same way every time,
    so it must not be retried, while how other database failures are classified stays
    the handler's own business.
    """
    return ErrorMapper(_translate_asyncpg_data)


def _translate_asyncpg_data(exc: Exception) -> MainstayError | None:
    from asyncpg import exceptions as pg  # noqa: PLC0415
    from asyncpg.exceptions import _base as pg_client  # noqa: PLC0415

    if isinstance(exc, pg.DataError | pg_client.DataError):
        return _translate_asyncpg(exc)
    return None


def _translate_asyncpg(exc: Exception) -> MainstayError | None:  # noqa: PLR0911 (one return per row of the table)
    import asyncpg  # noqa: PLC0415
    from asyncpg import exceptions as pg  # noqa: PLC0415
    from asyncpg.exceptions import _base as pg_client  # noqa: PLC0415

    if isinstance(exc, pg.SerializationError | pg.DeadlockDetectedError | pg.LockNotAvailableError):
        return Conflict(f"database: {_condition(exc)}: a concurrent transaction won; retry")
    if isinstance(exc, pg.UniqueViolationError | pg.ExclusionViolationError):
        return AlreadyExists(
            f"database: {_condition(exc)}: constraint {exc.constraint_name!r}"
            f" on table {exc.table_name!r}"
        )
    if isinstance(exc, pg.NotNullViolationError):
        return InvalidArgument(
            f"database: {_condition(exc)}: column {exc.column_name!r} on table {exc.table_name!r}"
        )
    if isinstance(exc, pg.IntegrityConstraintViolationError):
        return InvalidArgument(
            f"database: {_condition(exc)}: constraint {exc.constraint_name!r}"
            f" on table {exc.table_name!r}"
        )
    if type(exc) is pg.DataError or isinstance(exc, pg_client.DataError):
        # asyncpg raises these client-side when it cannot encode an argument; the
        # message quotes the argument.
        return InvalidArgument("database: a query argument has the wrong type or format")
    if isinstance(exc, pg.DataError):
        # The server's message quotes the offending value: keep only the condition.
        return InvalidArgument(f"database: {_condition(exc)}")
    if isinstance(exc, pg.QueryCanceledError | pg.TransactionTimeoutError | TimeoutError):
        return DependencyTimeout(f"database: {_condition(exc)}")
    if isinstance(
        exc,
        pg.PostgresConnectionError
        | pg.OperatorInterventionError
        | pg.InsufficientResourcesError
        | pg.ReadOnlySQLTransactionError
        | pg.IdleInTransactionSessionTimeoutError
        | pg.InvalidCachedStatementError
        | pg_client.OutdatedSchemaCacheError
        | OSError,
    ):
        return DependencyUnavailable(f"database unavailable: {_condition(exc)}")
    if isinstance(exc, asyncpg.InterfaceError) and _CLOSED_RESOURCE.search(str(exc)):
        return DependencyUnavailable(f"database unavailable: {exc}")
    if isinstance(exc, pg_client.InternalClientError) and _BROKEN_PROTOCOL.search(str(exc)):
        return DependencyUnavailable(f"database unavailable: the connection broke: {exc}")
    return None


def _condition(exc: Exception) -> str:
    """``UniqueViolationError`` -> ``unique violation (SQLSTATE 23505)``; no server text."""
    words = _words(exc).removesuffix(" error")
    sqlstate = getattr(exc, "sqlstate", None)
    return f"{words} (SQLSTATE {sqlstate})" if sqlstate else words


# --- httpx -------------------------------------------------------------------


def map_httpx_errors(service: str) -> ErrorMapper:
    """Map httpx failures talking to ``service`` (a name for messages and logs).

    Timeouts become ``DependencyTimeout``; connect, network and protocol errors
    ``DependencyUnavailable``. An ``HTTPStatusError`` (from ``raise_for_status``)
    maps by status: 5xx and 429 ``DependencyUnavailable`` (``Retry-After``, in
    seconds or as an HTTP-date, becomes ``retry_after``), 408 ``DependencyTimeout``,
    409 ``Conflict``, 404 ``NotFound``, 401 ``Unauthenticated``, 403
    ``PermissionDenied``, any other 4xx ``InvalidArgument``. 1xx/3xx stay
    un-mapped: they mean the client was configured wrongly.
    """
    return ErrorMapper(lambda exc: _translate_httpx(service, exc))


_HTTP_STATUS_ERRORS: dict[int, type[MainstayError]] = {
    401: Unauthenticated,
    403: PermissionDenied,
    404: NotFound,
    # A request timeout is the remote giving up on us: as transient as our own timeout.
    408: DependencyTimeout,
    409: Conflict,
    429: DependencyUnavailable,
}


def _translate_httpx(service: str, exc: Exception) -> MainstayError | None:
    import httpx  # noqa: PLC0415

    if isinstance(exc, httpx.HTTPStatusError):
        return _from_http_status(service, exc.request, exc.response)
    if isinstance(exc, httpx.TimeoutException):
        return DependencyTimeout(f"{service}: {_words(exc)} on {_describe_request(exc)}")
    if isinstance(exc, httpx.NetworkError | httpx.RemoteProtocolError | httpx.ProxyError):
        return DependencyUnavailable(
            f"{service} unavailable: {_words(exc)} on {_describe_request(exc)}"
        )
    return None


def _from_http_status(
    service: str, request: httpx.Request, response: httpx.Response
) -> MainstayError | None:
    status = response.status_code
    error_type = _HTTP_STATUS_ERRORS.get(status)
    if error_type is None:
        if status >= 500:
            error_type = DependencyUnavailable
        elif status >= 400:
            error_type = InvalidArgument
        else:
            return None
    retry_after = None
    if error_type.retryable:
        retry_after = parse_retry_after(response.headers.get("retry-after"))
    target = f"{request.method} {_safe_url(request.url)}"
    return error_type(
        f"{service}: HTTP {status} {response.reason_phrase} from {target}",
        retry_after=retry_after,
    )


def _describe_request(exc: httpx.RequestError) -> str:
    try:
        request = exc.request
    except RuntimeError:  # raised by httpx when the error carries no request
        return "request"
    return f"{request.method} {_safe_url(request.url)}"


def _safe_url(url: httpx.URL) -> str:
    """Scheme, host, port and path only: user-info and query strings may hold secrets."""
    port = f":{url.port}" if url.port is not None else ""
    return f"{url.scheme}://{url.host}{port}{url.path}"


def _words(exc: Exception) -> str:
    """``ConnectTimeout`` -> ``connect timeout``: the class name is the safe summary."""
    return re.sub(r"(?<!^)(?=[A-Z])", " ", type(exc).__name__).lower()


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """``Retry-After`` (delta-seconds or an HTTP date) as seconds from ``now`` (RFC 9110
    §10.2.3), never negative; None when absent or garbled."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


# --- gRPC --------------------------------------------------------------------


def map_grpc_errors(service: str) -> ErrorMapper:
    """Map a failed gRPC call to ``service`` by its status code.

    UNAVAILABLE, RESOURCE_EXHAUSTED, CANCELLED, INTERNAL and UNKNOWN become
    ``DependencyUnavailable`` (INTERNAL/UNKNOWN are the remote's bug: retrying
    is bounded by the retry tiers); DEADLINE_EXCEEDED ``DependencyTimeout``;
    ABORTED ``Conflict``; FAILED_PRECONDITION ``RuleViolation``; NOT_FOUND,
    ALREADY_EXISTS, INVALID_ARGUMENT/OUT_OF_RANGE, UNAUTHENTICATED and
    PERMISSION_DENIED their namesakes. A ``retry-after`` trailing metadata entry
    (which :mod:`mainstay_common.grpc` servers send) becomes ``retry_after``.
    UNIMPLEMENTED and DATA_LOSS stay un-mapped: a version skew or corruption is
    a deployment problem, not something a caller can classify.
    """
    return ErrorMapper(lambda exc: _translate_grpc(service, exc))


_GRPC_CODE_ERRORS: dict[str, type[MainstayError]] = {
    "UNAVAILABLE": DependencyUnavailable,
    "RESOURCE_EXHAUSTED": DependencyUnavailable,
    "CANCELLED": DependencyUnavailable,
    "INTERNAL": DependencyUnavailable,
    "UNKNOWN": DependencyUnavailable,
    "DEADLINE_EXCEEDED": DependencyTimeout,
    "ABORTED": Conflict,
    "NOT_FOUND": NotFound,
    "ALREADY_EXISTS": AlreadyExists,
    "INVALID_ARGUMENT": InvalidArgument,
    "OUT_OF_RANGE": InvalidArgument,
    "UNAUTHENTICATED": Unauthenticated,
    "PERMISSION_DENIED": PermissionDenied,
    "FAILED_PRECONDITION": RuleViolation,
}


def _translate_grpc(service: str, exc: Exception) -> MainstayError | None:
    import grpc  # noqa: PLC0415

    if not isinstance(exc, grpc.RpcError):
        return None
    # grpc.RpcError itself has no code(); the raised subclasses are also grpc.Call.
    call: Any = exc
    code = call.code() if callable(getattr(call, "code", None)) else None
    if not isinstance(code, grpc.StatusCode):
        return None
    error_type = _GRPC_CODE_ERRORS.get(code.name)
    if error_type is None:
        return None
    details = call.details() if callable(getattr(call, "details", None)) else None
    retry_after = None
    if callable(getattr(call, "trailing_metadata", None)):
        for key, value in call.trailing_metadata() or ():
            if key == "retry-after":
                retry_after = parse_retry_after(str(value))
    return error_type(f"{service}: {code.name}: {details or 'no details'}", retry_after=retry_after)
