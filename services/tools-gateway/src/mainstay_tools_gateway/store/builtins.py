"""The gateway's own tools: ``calculator`` and ``http_fetch``.

``http_fetch`` reaches only hosts on the configured allow-list and follows no
redirect (a redirect could leave the list); it answers the status, the
content type and the body as text, cut at the configured size.
"""

from __future__ import annotations

import fnmatch
from typing import TYPE_CHECKING, Any

import httpx

from mainstay_contracts.tools import BuiltinEndpoint, ToolSpec
from mainstay_tools_gateway.domain.calculator import CalculatorError, evaluate
from mainstay_tools_gateway.domain.model import ToolFailure
from mainstay_tools_gateway.store.invoke_http import read_capped

if TYPE_CHECKING:
    from collections.abc import Sequence

    from mainstay_tools_gateway.domain.model import CallContext

__all__ = ["BUILTIN_NAMES", "BuiltinInvoker", "builtin_specs"]

BUILTIN_NAMES = ("calculator", "http_fetch")


def builtin_specs() -> list[ToolSpec]:
    return [
        ToolSpec(
            name="calculator",
            description="Evaluate an arithmetic expression (+ - * / // % ** and parentheses).",
            kind="builtin",
            builtin=BuiltinEndpoint(builtin="calculator"),
            input_schema={
                "type": "object",
                "properties": {"expression": {"type": "string", "minLength": 1, "maxLength": 1000}},
                "required": ["expression"],
                "additionalProperties": False,
            },
            output_schema={"type": "number"},
            timeout_s=2.0,
        ),
        ToolSpec(
            name="http_fetch",
            description="Fetch a URL with GET from an allow-listed host; returns status and text.",
            kind="builtin",
            builtin=BuiltinEndpoint(builtin="http_fetch"),
            input_schema={
                "type": "object",
                "properties": {
                    "url": {"type": "string", "pattern": "^https?://", "maxLength": 2000},
                },
                "required": ["url"],
                "additionalProperties": False,
            },
            output_schema={
                "type": "object",
                "properties": {
                    "status": {"type": "integer"},
                    "content_type": {"type": "string"},
                    "body": {"type": "string"},
                    "truncated": {"type": "boolean"},
                },
                "required": ["status", "body", "truncated"],
            },
            timeout_s=15.0,
        ),
    ]


def host_allowed(host: str, allow: Sequence[str]) -> bool:
    host = host.lower().rstrip(".")
    return any(fnmatch.fnmatchcase(host, pattern.lower()) for pattern in allow)


class BuiltinInvoker:
    def __init__(
        self,
        *,
        allow_hosts: Sequence[str],
        max_bytes: int,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self._allow = list(allow_hosts)
        self._max_bytes = max_bytes
        self._client = client or httpx.AsyncClient(follow_redirects=False)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def call(self, tool: ToolSpec, arguments: dict[str, Any], context: CallContext) -> Any:
        assert tool.builtin is not None
        name = tool.builtin.builtin
        if name == "calculator":
            try:
                return evaluate(str(arguments.get("expression", "")))
            except CalculatorError as exc:
                raise ToolFailure("PERMANENT", str(exc)) from exc
        if name == "http_fetch":
            return await self._fetch(str(arguments.get("url", "")), context)
        raise ToolFailure("PERMANENT", f"no builtin tool named '{name}'")

    async def _fetch(self, url: str, context: CallContext) -> dict[str, Any]:
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL as exc:
            raise ToolFailure("PERMANENT", f"invalid URL: {exc}") from exc
        if parsed.scheme not in {"http", "https"} or not parsed.host:
            raise ToolFailure("PERMANENT", "only http and https URLs with a host can be fetched")
        if not host_allowed(parsed.host, self._allow):
            raise ToolFailure(
                "PERMANENT", f"host '{parsed.host}' is not on http_fetch's allow-list"
            )
        limit = min(self._max_bytes, context.max_output_bytes)
        try:
            async with self._client.stream("GET", parsed, timeout=context.timeout_s) as response:
                body, truncated = await read_capped(response, limit)
        except httpx.TimeoutException as exc:
            raise ToolFailure("TRANSIENT", f"'{parsed.host}' did not answer in time") from exc
        except httpx.TransportError as exc:
            raise ToolFailure(
                "TRANSIENT", f"could not reach '{parsed.host}': {type(exc).__name__}"
            ) from exc
        if response.status_code >= 500 or response.status_code in {408, 429}:
            raise ToolFailure("TRANSIENT", f"'{parsed.host}' answered HTTP {response.status_code}")
        return {
            "status": response.status_code,
            "content_type": response.headers.get("content-type", ""),
            "body": body.decode(response.encoding or "utf-8", "replace"),
            "truncated": truncated,
        }
