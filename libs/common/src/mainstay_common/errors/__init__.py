"""Mainstay's error tree; see :mod:`mainstay_common.errors._base` for the diagram."""

from mainstay_common.errors._adapters import (
    ErrorMapper,
    grpc_status_for,
    http_status_for,
    map_asyncpg_errors,
    map_grpc_errors,
    map_httpx_errors,
)
from mainstay_common.errors._base import (
    AlreadyExists,
    BusAction,
    Conflict,
    DependencyTimeout,
    DependencyUnavailable,
    InvalidArgument,
    InvalidMessage,
    MainstayError,
    NotFound,
    PermanentError,
    PermissionDenied,
    RetryableError,
    RuleViolation,
    Unauthenticated,
    is_retryable,
)
from mainstay_common.errors._validation import describe_validation_error

__all__ = [
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
    "map_asyncpg_errors",
    "map_grpc_errors",
    "map_httpx_errors",
]
