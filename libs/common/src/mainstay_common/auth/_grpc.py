"""gRPC (asyncio) server authentication: ``authorization: Bearer <token>`` metadata.

The interceptor verifies the token before the method runs. It cannot abort from
``intercept_service`` itself (no servicer context exists there), so it returns a
replacement handler of the same kind: one that aborts with the error's status,
or one that runs the original method with the principal bound, which
:func:`current_principal` then reads.

Binding happens inside the wrapped method rather than in ``intercept_service``
so it holds whichever task or thread grpc runs the method in. Async and
async-generator methods are supported, and plain synchronous unary methods;
a synchronous *generator* method runs its body after the wrapper returns, so it
sees no principal and :func:`current_principal` fails closed there.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

import grpc

from mainstay_common.auth._context import bind_principal
from mainstay_common.errors import MainstayError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable

    from mainstay_common.auth._principal import Principal
    from mainstay_common.auth._verifier import TokenVerifier

__all__ = ["DEFAULT_EXEMPT_METHODS", "AuthInterceptor"]

DEFAULT_EXEMPT_METHODS: tuple[str, ...] = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
)
"""Probes and tooling must work without a token; a trailing ``/`` exempts a whole service."""


def _metadata_value(metadata: Iterable[tuple[str, Any]] | None, key: str) -> str | None:
    for name, value in metadata or ():
        if name.lower() == key:
            return value.decode("latin-1") if isinstance(value, bytes) else str(value)
    return None


def _bind(behavior: Callable[..., Any], principal: Principal) -> Callable[..., Any]:
    if inspect.isasyncgenfunction(behavior):

        async def stream(request: Any, context: Any) -> Any:
            with bind_principal(principal):
                async for response in behavior(request, context):
                    yield response

        return stream

    if inspect.iscoroutinefunction(behavior):

        async def call(request: Any, context: Any) -> Any:
            with bind_principal(principal):
                return await behavior(request, context)

        return call

    def call_sync(request: Any, context: Any) -> Any:
        with bind_principal(principal):
            return behavior(request, context)

    return call_sync


def _abort_with(error: MainstayError) -> Callable[[Any, Any], Awaitable[None]]:
    code = getattr(grpc.StatusCode, error.grpc_status_name, grpc.StatusCode.UNAUTHENTICATED)

    async def abort(_request: Any, context: Any) -> None:
        await context.abort(code, error.message)

    return abort


def _replace_behavior(handler: Any, wrap: Callable[[Callable[..., Any]], Any]) -> Any:
    """A handler like ``handler`` whose method is ``wrap(method)``."""
    options = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(wrap(handler.unary_unary), **options)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(wrap(handler.unary_stream), **options)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(wrap(handler.stream_unary), **options)
    return grpc.stream_stream_rpc_method_handler(wrap(handler.stream_stream), **options)


class AuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc ships no stubs
    """Verifies every call's bearer token except on ``exempt_methods``.

    Entries of ``exempt_methods`` are full method names (``/pkg.Service/Method``)
    or service prefixes ending in ``/``. A missing or invalid token aborts with
    ``UNAUTHENTICATED`` and the verifier's reason; a verifier outage (no JWKS
    loadable) aborts with that error's own status, ``UNAVAILABLE``.
    """

    def __init__(
        self, verifier: TokenVerifier, *, exempt_methods: Iterable[str] = DEFAULT_EXEMPT_METHODS
    ) -> None:
        self._verifier = verifier
        exempt = tuple(exempt_methods)
        self._exempt_exact = frozenset(m for m in exempt if not m.endswith("/"))
        self._exempt_prefixes = tuple(m for m in exempt if m.endswith("/"))

    def is_exempt(self, method: str) -> bool:
        """Whether ``method`` is served without a token."""
        return method in self._exempt_exact or method.startswith(self._exempt_prefixes)

    async def intercept_service(
        self,
        continuation: Callable[[Any], Awaitable[Any]],
        handler_call_details: Any,
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None or self.is_exempt(handler_call_details.method):
            return handler
        authorization = _metadata_value(handler_call_details.invocation_metadata, "authorization")
        try:
            principal = await self._verifier.verify_authorization(authorization)
        except MainstayError as exc:
            error = exc
            return _replace_behavior(handler, lambda _behavior: _abort_with(error))
        return _replace_behavior(handler, lambda behavior: _bind(behavior, principal))
