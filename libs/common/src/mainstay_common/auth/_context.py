"""The principal of the request being served, carried in a context variable.

Handlers and domain code ask :func:`current_principal` instead of threading a
principal through every call. A context variable is per task, so concurrent
requests never see each other's principal; the gRPC interceptor, the FastAPI
dependency and the bus (for a task that carries a token) set it.
"""

from __future__ import annotations

import contextlib
from contextvars import ContextVar
from typing import TYPE_CHECKING

from mainstay_common.errors import Unauthenticated

if TYPE_CHECKING:
    from collections.abc import Iterator

    from mainstay_common.auth._principal import Principal

__all__ = ["bind_principal", "current_principal", "set_current_principal"]

_current: ContextVar[Principal | None] = ContextVar("mainstay_principal", default=None)


def current_principal() -> Principal:
    """The caller of the current request; :class:`Unauthenticated` when there is none.

    Failing closed matters: code that asks for a principal on an exempt method
    (or outside any request) must not silently run unauthenticated.
    """
    principal = _current.get()
    if principal is None:
        raise Unauthenticated("no authenticated principal in this context")
    return principal


def set_current_principal(principal: Principal) -> None:
    """Set the principal for the rest of the current task.

    For request scopes that end with their task (an HTTP request under uvicorn);
    elsewhere prefer :func:`bind_principal`, which restores the previous value.
    """
    _current.set(principal)


@contextlib.contextmanager
def bind_principal(principal: Principal) -> Iterator[Principal]:
    """Make ``principal`` current inside the ``with`` block only."""
    token = _current.set(principal)
    try:
        yield principal
    finally:
        _current.reset(token)
