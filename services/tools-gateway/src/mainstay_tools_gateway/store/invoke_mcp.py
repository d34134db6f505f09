"""MCP tools: the gateway as an MCP client, calling tools of other MCP servers and importing them.

Connections. A server is reached over streamable HTTP (``url``) or stdio
(``command``, a subprocess). Opening one costs round trips (and, for stdio, a
process start), so :class:`McpInvoker` keeps one connection per server and
credential, opened by the first call and shared by concurrent calls. One
idle for ``idle_s`` is closed when the next call comes in; past
``max_connections`` the least recently used idle one makes room. A stdio
server is therefore a long-lived child process, as in any MCP host; its
stderr goes to the gateway's log, line by line. Each connection lives in a
task of its own: the SDK's transports are anyio task groups, which must be
left by the task that entered them, while calls arrive from whichever
request needs the tool.

Classification of a call:

* the tool answered with ``isError: true``: ``PERMANENT``, with its text;
* the server could not be reached or started, the connection broke, the
  server failed inside (JSON-RPC ``-32603``, which is also how an HTTP 5xx
  arrives) or did not answer in time: ``TRANSIENT``, and the connection is
  dropped so the next call opens a fresh one;
* any other JSON-RPC error (unknown tool, invalid params), a stdio command
  that does not exist, or a result the gateway cannot use (the server asks
  for input mid-call): ``PERMANENT``.

Output: ``structuredContent`` when the result has it. Otherwise a single text
block is the output as a string, parsed as JSON when the tool declares an
output schema (such a server means the text to be the structured value); no
content is ``None``; several blocks, or one that is not text, are returned as
their JSON form (a list of blocks). The gateway then checks the output schema
itself, so a server that breaks its own schema gets ``INVALID_OUTPUT`` like any
other tool.

Credentials: over HTTP the vault secret goes in the header ``auth.header`` as
``auth.prefix + secret``. A stdio server gets it in the environment variable
named by ``auth.header`` (so register it with e.g. ``header: GITHUB_TOKEN``
and an empty ``prefix``); a stdio child otherwise sees only the SDK's minimal
environment (``PATH``, ``HOME``, ...), never the gateway's own variables.
Connections are kept per credential, and no message ever carries one.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TextIO

import httpx2
from mcp import Client, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.types import (
    CONNECTION_CLOSED,
    HEADER_MISMATCH,
    INTERNAL_ERROR,
    INVALID_REQUEST,
    REQUEST_TIMEOUT,
    CallToolRequest,
    CallToolRequestParams,
    CallToolResult,
    Implementation,
    PaginatedRequestParams,
    TextContent,
)
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mainstay_common.errors import DependencyUnavailable, InvalidArgument
from mainstay_common.lifecycle import cancel_and_wait
from mainstay_contracts.tools import CredentialRef, McpEndpoint, ToolSpec
from mainstay_tools_gateway.domain.model import ToolFailure

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from mcp.types import Tool

    from mainstay_tools_gateway.domain.model import CallContext

__all__ = ["McpInvoker", "McpServerRef", "discover_tools", "mcp_tool_name"]

_log = logging.getLogger("mainstay.tools.mcp")

_CLIENT_INFO = Implementation(name="mainstay-tools-gateway", version="1")
_SNIPPET = 500
_MAX_PAGES = 100
"""A server whose tools/list never stops paginating is cut off here."""
_CLOSE_TIMEOUT_S = 10.0
_DISCOVERY_TIMEOUT_S = 30.0
_OPEN_TIMEOUT_S = 30.0
"""At least this long to open a connection, even for a tool with a shorter call timeout."""
_STDERR_LINE = 64 * 1024
_TOOL_NAME_MAX = 64
_NOT_IN_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


class McpServerRef(BaseModel):
    """An MCP server to import tools from: streamable HTTP at ``url``, or ``command`` over stdio."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,39}$")
    """What the gateway calls the server (in messages and the default name prefix)."""
    transport: Literal["streamable-http", "stdio"] = "streamable-http"
    url: str | None = Field(default=None, max_length=2000, pattern=r"^https?://")
    command: list[str] | None = Field(default=None, min_length=1, max_length=100)
    auth: CredentialRef | None = None

    @model_validator(mode="after")
    def _where(self) -> McpServerRef:
        if self.transport == "streamable-http" and not self.url:
            raise ValueError("an MCP server with transport 'streamable-http' needs a url")
        if self.transport == "stdio" and not self.command:
            raise ValueError("an MCP server with transport 'stdio' needs a command")
        return self

    def endpoint(self, remote_name: str) -> McpEndpoint:
        return McpEndpoint(
            transport=self.transport,
            url=self.url if self.transport == "streamable-http" else None,
            command=self.command if self.transport == "stdio" else None,
            remote_name=remote_name,
            auth=self.auth,
        )


# -- where a server is, and how to open it ----------------------------------------


@dataclass(frozen=True, slots=True)
class _Server:
    """One connection's worth of identity: where the server is and which credential it gets."""

    transport: str
    url: str | None
    command: tuple[str, ...] | None
    auth_name: str
    auth_value: str | None = field(repr=False)
    credential: str | None = field(repr=False)

    @classmethod
    def of(cls, endpoint: McpEndpoint | McpServerRef, credential: str | None) -> _Server:
        auth = endpoint.auth
        return cls(
            transport=endpoint.transport,
            url=endpoint.url if endpoint.transport == "streamable-http" else None,
            command=tuple(endpoint.command or ()) if endpoint.transport == "stdio" else None,
            auth_name=auth.header if auth is not None else "",
            auth_value=auth.prefix + credential if auth is not None and credential else None,
            credential=credential if auth is not None and credential else None,
        )

    @property
    def key(self) -> tuple[str, ...]:
        # The credential enters the key only as a digest, so the pool never holds it twice.
        secret = hashlib.sha256(self.auth_value.encode()).hexdigest() if self.auth_value else ""
        return (self.transport, self.url or "", *(self.command or ()), self.auth_name, secret)

    @property
    def where(self) -> str:
        """The server for a message: the URL without user info or query, or the program."""
        if self.url is not None:
            match = re.match(r"^(https?://)(?:[^@/]*@)?([^?#]*)", self.url)
            return match.group(1) + match.group(2) if match else "the MCP server"
        return f"command '{self.command[0]}'" if self.command else "the MCP server"

    @contextlib.asynccontextmanager
    async def open(self) -> AsyncIterator[Client]:
        async with contextlib.AsyncExitStack() as stack:
            if self.url is not None:
                headers = {self.auth_name: self.auth_value} if self.auth_value else {}
                http = await stack.enter_async_context(
                    httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30.0, read=300.0))
                )
                client = Client(
                    streamable_http_client(self.url, http_client=http),
                    cache=None,
                    client_info=_CLIENT_INFO,
                )
            else:
                assert self.command
                errlog = await stack.enter_async_context(self._stderr_to_log())
                params = StdioServerParameters(
                    command=self.command[0],
                    args=list(self.command[1:]),
                    env={self.auth_name: self.auth_value} if self.auth_value else None,
                )
                client = Client(
                    stdio_client(params, errlog=errlog), cache=None, client_info=_CLIENT_INFO
                )
            yield await stack.enter_async_context(client)

    @contextlib.asynccontextmanager
    async def _stderr_to_log(self) -> AsyncIterator[TextIO]:
        """A pipe for a stdio server's stderr whose lines go to the log, secrets redacted.

        The child's raw stderr would otherwise interleave with the gateway's own
        (structured) log stream.
        """
        read_fd, write_fd = os.pipe()
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=_STDERR_LINE)
        with os.fdopen(read_fd, "rb") as read_end:
            transport, _ = await loop.connect_read_pipe(
                lambda: asyncio.StreamReaderProtocol(reader), read_end
            )
            forward = asyncio.create_task(self._forward(reader))
            try:
                with os.fdopen(write_fd, "w") as write_end:
                    yield write_end
                # Our write end is closed and the child is gone: the reader sees EOF.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(_CLOSE_TIMEOUT_S):
                        await asyncio.shield(forward)
            finally:
                forward.cancel()
                transport.close()

    async def _forward(self, reader: asyncio.StreamReader) -> None:
        secrets = sorted(
            {s for s in (self.auth_value, self.credential) if s}, key=len, reverse=True
        )
        while True:
            try:
                line = await reader.readline()
            except ValueError:  # a line over the limit: drop what is buffered and go on
                line = await reader.read(_STDERR_LINE)
            if not line:
                return
            text = line.decode("utf-8", "replace").rstrip()
            for secret in secrets:
                text = text.replace(secret, "[REDACTED]")
            if text:
                _log.info("MCP server %s: %s", self.where, text[:_SNIPPET])


def _describe(exc: BaseException) -> str:
    """A short, secret-free reason: exception types only (driver messages may echo headers)."""
    if isinstance(exc, BaseExceptionGroup):
        return ", ".join(dict.fromkeys(_describe(e) for e in exc.exceptions))
    if isinstance(exc, MCPError):
        return f"{exc.message} (JSON-RPC {exc.code})"
    return type(exc).__name__


class _Broken(ToolFailure):
    """A ``TRANSIENT`` failure of the connection itself: it is dropped and reopened."""

    def __init__(self, message: str) -> None:
        super().__init__("TRANSIENT", message)


def _connection_lost(exc: MCPError) -> bool:
    # A legacy (pre-2026) session the server no longer knows answers INVALID_REQUEST.
    return exc.code == CONNECTION_CLOSED or (
        exc.code == INVALID_REQUEST and "session" in exc.message.lower()
    )


def _open_failure(server: _Server, exc: BaseException, tool: str) -> ToolFailure:
    if isinstance(exc, FileNotFoundError | PermissionError):
        return ToolFailure(
            "PERMANENT",
            f"cannot start the MCP server of tool '{tool}': {server.where} {_describe(exc)}",
        )
    return _Broken(
        f"could not connect to the MCP server of tool '{tool}' ({server.where}): {_describe(exc)}"
    )


# -- one open connection -----------------------------------------------------------


class _Connection:
    """An open client connection, held by a task of its own and shared by callers."""

    def __init__(self, server: _Server, open_timeout_s: float) -> None:
        self.server = server
        self._open_timeout_s = open_timeout_s
        self._client: Client | None = None
        self._opened = asyncio.Event()
        self._stop = asyncio.Event()
        self._error: BaseException | None = None
        self.last_used = time.monotonic()
        self.in_flight = 0
        # A fresh context: the connection outlives the request that opened it and must
        # not carry that request's principal or span.
        self._task = asyncio.create_task(
            self._hold(), name=f"mcp-connection {server.where}", context=contextvars.Context()
        )

    @property
    def dead(self) -> bool:
        return self._task.done()

    async def _hold(self) -> None:
        try:
            async with contextlib.AsyncExitStack() as stack:
                async with asyncio.timeout(self._open_timeout_s):
                    self._client = await stack.enter_async_context(self.server.open())
                self._opened.set()
                await self._stop.wait()
        # Any failure of the SDK's transport ends this connection and is reported to
        # its callers (classified there); nothing here may escape an orphan task.
        except Exception as exc:  # noqa: BLE001
            self._error = exc
            _log.debug("MCP connection to %s ended: %s", self.server.where, _describe(exc))
        finally:
            self._client = None
            self._opened.set()

    async def client(self, tool: str) -> Client:
        """The connected client, once open; :class:`ToolFailure` if opening failed."""
        await self._opened.wait()
        if self._client is None:
            if self._error is not None:
                raise _open_failure(self.server, self._error, tool)
            raise _Broken(f"the connection to the MCP server of tool '{tool}' closed")
        return self._client

    async def aclose(self) -> None:
        self._stop.set()
        try:
            async with asyncio.timeout(_CLOSE_TIMEOUT_S):
                await asyncio.shield(self._task)
        except TimeoutError:
            await cancel_and_wait(self._task)


# -- the invoker ---------------------------------------------------------------------


def _text_of(result: CallToolResult) -> str:
    texts = [block.text for block in result.content if isinstance(block, TextContent)]
    return "\n".join(texts).strip()


def _output(tool: ToolSpec, result: CallToolResult) -> Any:
    if result.structured_content is not None:
        return result.structured_content
    blocks = result.content
    if not blocks:
        return None
    if len(blocks) == 1 and isinstance(blocks[0], TextContent):
        text = blocks[0].text
        if tool.output_schema is not None:
            try:
                return json.loads(text)
            except ValueError:
                return text  # the output schema check reports the mismatch
        return text
    return [block.model_dump(mode="json", by_alias=True, exclude_none=True) for block in blocks]


class McpInvoker:
    """Calls ``tools/call`` on a tool's MCP server over a pooled connection."""

    def __init__(self, *, idle_s: float = 300.0, max_connections: int = 64) -> None:
        self._idle_s = idle_s
        self._max_connections = max_connections
        self._pool: dict[tuple[str, ...], _Connection] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._closed = False

    async def aclose(self) -> None:
        self._closed = True
        pool, self._pool = list(self._pool.values()), {}
        await asyncio.gather(*(c.aclose() for c in pool), *self._closing)

    def _retire(self, connection: _Connection) -> None:
        if self._pool.get(connection.server.key) is connection:
            del self._pool[connection.server.key]
        task = asyncio.create_task(connection.aclose(), context=contextvars.Context())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def _sweep(self, now: float) -> None:
        for connection in list(self._pool.values()):
            if connection.in_flight == 0 and now - connection.last_used > self._idle_s:
                self._retire(connection)

    def _make_room(self) -> None:
        idle = sorted(
            (c for c in self._pool.values() if c.in_flight == 0), key=lambda c: c.last_used
        )
        for connection in idle[: max(0, len(self._pool) - self._max_connections + 1)]:
            self._retire(connection)

    def _connection(self, server: _Server, timeout_s: float) -> _Connection:
        if self._closed:
            raise ToolFailure("TRANSIENT", "the gateway is shutting down")
        now = time.monotonic()
        self._sweep(now)
        connection = self._pool.get(server.key)
        if connection is not None and connection.dead:
            self._retire(connection)
            connection = None
        if connection is None:
            self._make_room()
            # Opening may take longer than one call may wait (a stdio server starting up):
            # it goes on in the connection's task, ready for the next call.
            connection = _Connection(server, open_timeout_s=max(timeout_s, _OPEN_TIMEOUT_S))
            self._pool[server.key] = connection
        connection.last_used = now
        return connection

    async def call(self, tool: ToolSpec, arguments: dict[str, Any], context: CallContext) -> Any:
        endpoint = tool.mcp
        assert endpoint is not None
        if endpoint.auth is not None and context.credential is None:
            raise ToolFailure(
                "PERMANENT",
                f"tool '{tool.name}' needs credential '{endpoint.auth.credential}',"
                " and the vault has none for this caller",
            )
        server = _Server.of(endpoint, context.credential)
        connection = self._connection(server, context.timeout_s)
        connection.in_flight += 1
        try:
            client = await connection.client(tool.name)
            result = await self._call(client, tool, endpoint.remote_name, arguments, context)
        except _Broken:
            self._retire(connection)
            raise
        finally:
            connection.in_flight -= 1
            connection.last_used = time.monotonic()
        if result.is_error:
            text = _text_of(result)[:_SNIPPET] or "no message"
            raise ToolFailure("PERMANENT", f"tool '{tool.name}' reported an error: {text}")
        return _output(tool, result)

    async def _call(
        self,
        client: Client,
        tool: ToolSpec,
        remote_name: str,
        arguments: dict[str, Any],
        context: CallContext,
    ) -> CallToolResult:
        # The session's own request (not Client.call_tool), so the result is not checked
        # against the server's output schema here: the gateway checks it and answers
        # INVALID_OUTPUT, as for every other kind of tool.
        request = CallToolRequest(
            params=CallToolRequestParams(name=remote_name, arguments=arguments)
        )
        session = client.session
        try:
            try:
                return await session.send_request(
                    request, CallToolResult, request_read_timeout_seconds=context.timeout_s
                )
            except MCPError as exc:
                if exc.code != HEADER_MISMATCH:
                    raise
                # The server mirrors some arguments into headers, which the session only
                # knows once it has listed the tools: list them, then send once more.
                await _list_all(client)
                return await session.send_request(
                    request, CallToolResult, request_read_timeout_seconds=context.timeout_s
                )
        except MCPError as exc:
            if exc.code == REQUEST_TIMEOUT:
                raise ToolFailure(
                    "TRANSIENT", f"tool '{tool.name}' did not answer in time"
                ) from None
            if exc.code == INTERNAL_ERROR or _connection_lost(exc):
                raise _Broken(
                    f"the MCP server of tool '{tool.name}' failed: {_describe(exc)}"
                ) from None
            raise ToolFailure(
                "PERMANENT", f"the MCP server refused tool '{tool.name}': {_describe(exc)}"
            ) from None
        except ValidationError:
            raise ToolFailure(
                "PERMANENT",
                f"the MCP server of tool '{tool.name}' answered with something other than a"
                " tool result (it may have asked for input, which the gateway cannot give)",
            ) from None


async def _list_all(client: Client) -> list[Tool]:
    tools: list[Tool] = []
    cursor: str | None = None
    seen: set[str] = set()
    for _ in range(_MAX_PAGES):
        page = await client.session.list_tools(params=PaginatedRequestParams(cursor=cursor))
        tools.extend(page.tools)
        cursor = page.next_cursor
        if cursor is None or cursor in seen:
            break
        seen.add(cursor)
    return tools


# -- importing a server's tools --------------------------------------------------------


def mcp_tool_name(prefix: str, remote_name: str, *, taken: set[str] | None = None) -> str:
    """``prefix + remote_name`` made a valid, unused gateway tool name.

    Characters a tool name cannot hold become ``_``; a name that does not
    start with a letter gets ``mcp_`` in front; a name that is too long, or
    already ``taken``, ends in a short digest of the remote name instead.
    """
    name = _NOT_IN_NAME.sub("_", prefix + remote_name)
    if not re.match(r"[A-Za-z]", name):
        name = "mcp_" + name
    if len(name) > _TOOL_NAME_MAX or (taken is not None and name in taken):
        digest = hashlib.sha256(remote_name.encode()).hexdigest()[:8]
        name = f"{name[: _TOOL_NAME_MAX - 9]}-{digest}"
    return name


def _spec(server: McpServerRef, tool: Tool, name: str, *, scope: str, timeout_s: float) -> ToolSpec:
    annotations = tool.annotations
    read_only = annotations is not None and bool(annotations.read_only_hint)
    description = tool.description or tool.title or ""
    return ToolSpec(
        name=name,
        description=description[:4000],
        input_schema=dict(tool.input_schema),
        output_schema=dict(tool.output_schema) if tool.output_schema is not None else None,
        kind="mcp",
        mcp=server.endpoint(tool.name),
        side_effects=not read_only,
        scope=scope,
        timeout_s=timeout_s,
    )


async def discover_tools(
    server: McpServerRef,
    *,
    credential: str | None,
    prefix: str,
    scope: str = "",
    timeout_s: float = 30.0,
) -> list[ToolSpec]:
    """One :class:`ToolSpec` per tool the server lists (following every page).

    Each is named ``prefix + remote name`` (see :func:`mcp_tool_name`), keeps
    the server's description and schemas, and counts as side-effecting unless
    the server marks it ``readOnlyHint``. ``scope`` and ``timeout_s`` (the
    call timeout) apply to every tool; a tool the registry cannot hold (a
    remote name over 200 characters) is left out with a warning. An
    unreachable server is :class:`DependencyUnavailable`; a server that cannot
    be started or refuses to list is :class:`InvalidArgument`.
    """
    where = _Server.of(server, credential)
    try:
        async with asyncio.timeout(_DISCOVERY_TIMEOUT_S), where.open() as client:
            listed = await _list_all(client)
    except (FileNotFoundError, PermissionError) as exc:
        raise InvalidArgument(
            f"cannot start MCP server '{server.name}': {where.where} {_describe(exc)}"
        ) from None
    except MCPError as exc:
        if exc.code in {INTERNAL_ERROR, REQUEST_TIMEOUT} or _connection_lost(exc):
            raise DependencyUnavailable(
                f"MCP server '{server.name}' ({where.where}) failed to list its tools: {_describe(exc)}"
            ) from None
        raise InvalidArgument(
            f"MCP server '{server.name}' ({where.where}) refused to list its tools: {_describe(exc)}"
        ) from None
    except TimeoutError:
        raise DependencyUnavailable(
            f"MCP server '{server.name}' ({where.where}) did not list its tools"
            f" within {_DISCOVERY_TIMEOUT_S:g} s"
        ) from None
    # The SDK's transports fail as exception groups of driver errors; every one of them
    # means the server could not be reached or spoken to.
    except Exception as exc:  # noqa: BLE001
        raise DependencyUnavailable(
            f"MCP server '{server.name}' ({where.where}) is unreachable: {_describe(exc)}"
        ) from None
    taken: set[str] = set()
    specs: list[ToolSpec] = []
    for tool in listed:
        name = mcp_tool_name(prefix, tool.name, taken=taken)
        try:
            spec = _spec(server, tool, name, scope=scope, timeout_s=timeout_s)
        except ValidationError as exc:
            _log.warning(
                "MCP server %s: tool %r cannot be imported: %s",
                server.name,
                tool.name[:100],
                "; ".join(str(e["msg"]) for e in exc.errors()),
            )
            continue
        taken.add(name)
        specs.append(spec)
    return specs
