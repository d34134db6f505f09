"""The Mainstay error tree.

Every error says how it must be handled, so no caller has to guess::

    MainstayError                     retryable? bus action   gRPC status          HTTP
    ├── RetryableError                yes        retry tier   UNAVAILABLE          503
    │   ├── DependencyUnavailable     yes        retry tier   UNAVAILABLE          503
    │   ├── DependencyTimeout         yes        retry tier   DEADLINE_EXCEEDED    504
    │   └── Conflict                  yes        retry tier   ABORTED              409
    └── PermanentError                no         DLQ          FAILED_PRECONDITION  422
        ├── InvalidMessage            no         DLQ          INVALID_ARGUMENT     422
        ├── InvalidArgument           no         DLQ          INVALID_ARGUMENT     400
        ├── NotFound                  no         DLQ          NOT_FOUND            404
        ├── AlreadyExists             no         DLQ          ALREADY_EXISTS       409
        ├── Unauthenticated           no         DLQ          UNAUTHENTICATED      401
        ├── PermissionDenied          no         DLQ          PERMISSION_DENIED    403
        └── RuleViolation             no         DLQ          FAILED_PRECONDITION  422

An exception that is not a ``MainstayError`` is a bug or an unclassified driver
failure: the bus treats it as retryable (bounded by the retry tiers, then the
DLQ with ``mainstay-error-class: exhausted``), gRPC answers INTERNAL and HTTP 500,
and neither leaks its message to the caller.
"""

from __future__ import annotations

import enum
from typing import ClassVar

__all__ = [
    "AlreadyExists",
    "BusAction",
    "Conflict",
    "DependencyTimeout",
    "DependencyUnavailable",
    "InvalidArgument",
    "InvalidMessage",
    "MainstayError",
    "NotFound",
    "PermanentError",
    "PermissionDenied",
    "RetryableError",
    "RuleViolation",
    "Unauthenticated",
    "is_retryable",
]


class BusAction(enum.Enum):
    """What the bus does with a message whose handler raised."""

    RETRY = "retry"
    DEAD_LETTER = "dead-letter"


class MainstayError(Exception):
    """Base of every error Mainstay raises on purpose.

    ``retry_after`` (seconds) lets the raiser ask for a minimum delay before the
    next attempt, as a ``Retry-After`` header would.
    """

    retryable: ClassVar[bool] = True
    grpc_status_name: ClassVar[str] = "UNAVAILABLE"
    http_status: ClassVar[int] = 503

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after

    @property
    def bus_action(self) -> BusAction:
        return BusAction.RETRY if self.retryable else BusAction.DEAD_LETTER

    @property
    def type_name(self) -> str:
        return type(self).__name__

    def __str__(self) -> str:
        return self.message


class RetryableError(MainstayError):
    """A transient failure: the same message may succeed later."""


class DependencyUnavailable(RetryableError):
    """A database, broker or remote service could not be reached."""


class DependencyTimeout(RetryableError):
    """A dependency did not answer within its deadline."""

    grpc_status_name = "DEADLINE_EXCEEDED"
    http_status = 504


class Conflict(RetryableError):
    """A concurrent change won (serialization failure, lost optimistic lock)."""

    grpc_status_name = "ABORTED"
    http_status = 409


class PermanentError(MainstayError):
    """The same message will fail the same way every time: never retried."""

    retryable = False
    grpc_status_name = "FAILED_PRECONDITION"
    http_status = 422


class InvalidMessage(PermanentError):
    """A consumed message breaks its contract (envelope or payload schema)."""

    grpc_status_name = "INVALID_ARGUMENT"
    http_status = 422


class InvalidArgument(PermanentError):
    """A request carries a value the operation cannot accept."""

    grpc_status_name = "INVALID_ARGUMENT"
    http_status = 400


class NotFound(PermanentError):
    grpc_status_name = "NOT_FOUND"
    http_status = 404


class AlreadyExists(PermanentError):
    grpc_status_name = "ALREADY_EXISTS"
    http_status = 409


class Unauthenticated(PermanentError):
    grpc_status_name = "UNAUTHENTICATED"
    http_status = 401


class PermissionDenied(PermanentError):
    grpc_status_name = "PERMISSION_DENIED"
    http_status = 403


class RuleViolation(PermanentError):
    """A business rule forbids the operation (over budget, quarantined agent...)."""


def is_retryable(exc: BaseException) -> bool:
    """Whether the bus should retry a message whose handler raised ``exc``."""
    if isinstance(exc, MainstayError):
        return exc.retryable
    return True
