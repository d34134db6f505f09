"""HTTP tools: the arguments go out as JSON (``GET``: as the query), the answer is classified.

2xx is success; 429 is ``RATE_LIMITED`` with the tool's ``Retry-After``;
408, 425 and 5xx, timeouts and connection failures are ``TRANSIENT``; every
other status is ``PERMANENT``. The body is read only up to the output limit,
so a tool cannot make the gateway buffer more than that. The call's
idempotency key travels as ``Idempotency-Key`` so a tool can deduplicate too.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import httpx

from mainstay_tools_gateway.domain.model import ToolFailure, classify_status, parse_retry_after

if TYPE_CHECKING:
    from mainstay_contracts.tools import ToolSpec
    from mainstay_tools_gateway.domain.model import CallContext

__all__ = ["HttpInvoker", "read_capped", "read_limited"]

_SNIPPET = 300


async def read_capped(response: httpx.Response, limit: int) -> tuple[bytes, bool]:
    """At most ``limit`` bytes of the body, and whether there was more (reading stops there)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            return b"".join(chunks)[:limit], True
    return b"".join(chunks), False


async def read_limited(response: httpx.Response, limit: int) -> bytes:
    """The body, or :class:`ToolFailure` once it grows past ``limit`` bytes."""
    body, cut = await read_capped(response, limit)
    if cut:
        raise ToolFailure("PERMANENT", f"tool output is larger than the limit of {limit} bytes")
    return body


def _query(arguments: dict[str, Any]) -> dict[str, str]:
    return {
        k: v if isinstance(v, str) else json.dumps(v) for k, v in arguments.items() if v is not None
    }


class HttpInvoker:
    def __init__(self, client: httpx.AsyncClient | None = None) -> None:
        self._client = client or httpx.AsyncClient(follow_redirects=False)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def call(self, tool: ToolSpec, arguments: dict[str, Any], context: CallContext) -> Any:
        endpoint = tool.http
        assert endpoint is not None
        headers = {"Accept": "application/json", **endpoint.headers}
        if context.idempotency_key:
            headers["Idempotency-Key"] = context.idempotency_key
        if endpoint.auth is not None:
            if context.credential is None:
                raise ToolFailure(
                    "PERMANENT",
                    f"tool '{tool.name}' needs credential '{endpoint.auth.credential}',"
                    " and the vault has none for this caller",
                )
            headers[endpoint.auth.header] = endpoint.auth.prefix + context.credential
        get = endpoint.method == "GET"
        request = self._client.build_request(
            endpoint.method,
            endpoint.url,
            params=_query(arguments) if get else None,
            json=None if get else arguments,
            headers=headers,
            timeout=context.timeout_s,
        )
        try:
            response = await self._client.send(request, stream=True)
        except httpx.TimeoutException as exc:
            raise ToolFailure("TRANSIENT", f"tool '{tool.name}' did not answer in time") from exc
        except httpx.TransportError as exc:
            raise ToolFailure(
                "TRANSIENT", f"could not reach tool '{tool.name}': {type(exc).__name__}"
            ) from exc
        try:
            try:
                body = await read_limited(response, context.max_output_bytes)
            except httpx.TimeoutException as exc:
                raise ToolFailure(
                    "TRANSIENT", f"tool '{tool.name}' did not answer in time"
                ) from exc
            except httpx.TransportError as exc:
                raise ToolFailure(
                    "TRANSIENT", f"tool '{tool.name}' broke off its answer: {type(exc).__name__}"
                ) from exc
        finally:
            await response.aclose()
        failure = classify_status(response.status_code)
        if failure is not None:
            snippet = body[:_SNIPPET].decode("utf-8", "replace")
            raise ToolFailure(
                failure,
                f"tool '{tool.name}' answered HTTP {response.status_code}: {snippet}",
                retry_after_s=parse_retry_after(response.headers.get("retry-after")),
            )
        if not body:
            return None
        if "json" in response.headers.get("content-type", "").lower():
            try:
                return json.loads(body)
            except ValueError as exc:
                raise ToolFailure(
                    "PERMANENT", f"tool '{tool.name}' sent invalid JSON: {exc}"
                ) from exc
        return body.decode("utf-8", "replace")
