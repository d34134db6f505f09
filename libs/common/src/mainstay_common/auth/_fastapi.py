"""FastAPI dependencies: ``Depends(require_principal)`` and ``Depends(requires_scope(...))``.

The verifier lives on the app (:func:`attach_verifier`), not in a module global,
so each app a test builds verifies against its own keys. Failures are
``HTTPException`` with the RFC 6750 ``WWW-Authenticate`` header, which works in
any FastAPI app; apps built by ``create_http_app`` render them in the Mainstay
error shape. A verifier outage (``DependencyUnavailable``) is left to propagate,
so it is answered 503 rather than blamed on the caller's token.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, HTTPException, Request

from mainstay_common.auth._context import set_current_principal
from mainstay_common.auth._principal import Principal  # noqa: TC001  # FastAPI resolves annotations at runtime
from mainstay_common.errors import Unauthenticated

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from starlette.applications import Starlette

    from mainstay_common.auth._verifier import TokenVerifier

__all__ = ["attach_verifier", "require_principal", "requires_scope"]

_STATE_KEY = "mainstay_token_verifier"
_REALM = "mainstay"


def attach_verifier(app: Starlette, verifier: TokenVerifier) -> None:
    """Make ``verifier`` the one :func:`require_principal` uses for ``app``."""
    setattr(app.state, _STATE_KEY, verifier)


def _header_text(message: str) -> str:
    # Quoted-string values in WWW-Authenticate cannot hold quotes or backslashes.
    return message.replace("\\", "").replace('"', "'")


async def require_principal(request: Request) -> Principal:
    """The verified caller of this request (401 when the bearer token is missing or bad).

    Also binds the principal for the rest of the request, so code below the
    route can call :func:`current_principal`; the request's context dies with it.
    """
    verifier: TokenVerifier | None = getattr(request.app.state, _STATE_KEY, None)
    if verifier is None:
        raise RuntimeError("no TokenVerifier on this app: call attach_verifier(app, verifier)")
    authorization = request.headers.get("authorization")
    try:
        principal = await verifier.verify_authorization(authorization)
    except Unauthenticated as exc:
        challenge = f'Bearer realm="{_REALM}"'
        if authorization:  # RFC 6750 §3.1: no error code when no credentials were sent
            challenge += f', error="invalid_token", error_description="{_header_text(exc.message)}"'
        raise HTTPException(
            status_code=401, detail=exc.message, headers={"WWW-Authenticate": challenge}
        ) from exc
    set_current_principal(principal)
    return principal


def requires_scope(scope: str) -> Callable[[Principal], Awaitable[Principal]]:
    """A dependency that yields the principal if it holds ``scope``, else answers 403."""

    async def dependency(principal: Annotated[Principal, Depends(require_principal)]) -> Principal:
        if not principal.has_scope(scope):
            raise HTTPException(
                status_code=403,
                detail=f"missing scope '{scope}'",
                headers={
                    "WWW-Authenticate": f'Bearer realm="{_REALM}", error="insufficient_scope", scope="{_header_text(scope)}"'
                },
            )
        return principal

    dependency.__name__ = f"requires_scope({scope!r})"
    return dependency
