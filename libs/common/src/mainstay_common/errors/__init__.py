"""Mainstay's error tree; see :mod:`mainstay_common.errors._base` for the diagram."""

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
