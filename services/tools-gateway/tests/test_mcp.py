"""MCP both ways, against the real gateway: importing MCP servers' tools, and serving tools over MCP."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx2
import pytest
import pytest_asyncio
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import TextContent

from mainstay_common.http import HttpServer
from mainstay_tools_gateway.domain.redaction import REDACTED

from .conftest import Gateway, unique
from .mcp_fixtures.demo_server import Demo, build

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable

    import httpx
    from mcp.types import CallToolResult

pytestmark = pytest.mark.real

DEMO_SCRIPT = Path(__file__).parent / "mcp_fixtures" / "demo_server.py"


def tenant() -> str:
    return f"tenant-{uuid.uuid4().hex[:8]}"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def demo() -> AsyncIterator[tuple[Demo, str]]:
    """The demo MCP server over streamable HTTP on loopback, and its endpoint URL."""
    server = build()
    async with HttpServer(server.mcp.streamable_http_app()) as http:
        yield server, f"{http.url}/mcp"


async def import_server(gateway: Gateway, body: dict[str, Any]) -> httpx.Response:
    return await gateway.http.post("/v1/mcp/imports", json=body, headers=gateway.admin_headers())


async def imported(gateway: Gateway, body: dict[str, Any]) -> dict[str, list[str]]:
    response = await import_server(gateway, body)
    assert response.status_code == 200, response.text
    return dict(response.json())


def text(result: CallToolResult) -> str:
    return "\n".join(b.text for b in result.content if isinstance(b, TextContent))


def mcp_client(gateway: Gateway, http: httpx2.AsyncClient, **options: Any) -> Client:
    return Client(
        streamable_http_client(f"{gateway.base_url}/mcp", http_client=http), cache=None, **options
    )


def bearer(gateway: Gateway, who: str, scopes: Iterable[str]) -> httpx2.AsyncClient:
    token = gateway.token(who, scopes, subject="mcp-agent")
    return httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30)


# -- importing -----------------------------------------------------------------------


async def test_tools_of_a_streamable_http_server_are_imported_and_called(
    gateway: Gateway, demo: tuple[Demo, str]
) -> None:
    server, url = demo
    prefix = f"{unique('demo')}."
    answer = await imported(gateway, {"name": "demo", "url": url, "prefix": prefix})
    remote = ("add", "fail", "whoami", "env", "shout", "stats", "odd_name_1")
    names = {f"{prefix}{n}" for n in remote}
    assert set(answer["registered"]) == names
    assert answer["unchanged"] == []

    listed = (await gateway.http.get("/v1/tools", headers=gateway.admin_headers())).json()
    tools = {t["name"]: t for t in listed if t["name"].startswith(prefix)}
    assert set(tools) == names
    add = tools[f"{prefix}add"]
    assert add["kind"] == "mcp"
    assert add["description"] == "Add two integers."
    assert add["mcp"]["remote_name"] == "add"
    assert add["mcp"]["url"] == url
    assert add["input_schema"]["required"] == ["a", "b"]
    assert add["output_schema"]["properties"]["result"]["type"] == "integer"
    assert add["side_effects"] is False  # readOnlyHint
    assert tools[f"{prefix}fail"]["side_effects"] is True
    assert tools[f"{prefix}odd_name_1"]["mcp"]["remote_name"] == "odd name/1"

    before = server.calls["add"]
    result = await gateway.invoke(f"{prefix}add", {"a": 2, "b": 3})
    assert result["outcome"] == "OK", result
    assert result["output"] == {"result": 5}
    assert server.calls["add"] == before + 1
    again = await gateway.invoke(f"{prefix}add", {"a": 20, "b": 22})
    assert again["output"] == {"result": 42}
    assert server.calls["add"] == before + 2

    # The gateway checks the imported input schema before the server sees anything.
    invalid = await gateway.invoke(f"{prefix}add", {"a": "two"})
    assert invalid["outcome"] == "INVALID_ARGUMENTS"
    assert server.calls["add"] == before + 2

    # Importing again changes nothing.
    repeat = await imported(gateway, {"name": "demo", "url": url, "prefix": prefix})
    assert repeat["registered"] == []
    assert set(repeat["unchanged"]) == names


async def test_an_mcp_tool_error_is_a_permanent_failure(
    gateway: Gateway, demo: tuple[Demo, str]
) -> None:
    server, url = demo
    prefix = f"{unique('demo')}."
    await imported(gateway, {"name": "demo", "url": url, "prefix": prefix})
    before = server.calls["fail"]
    result = await gateway.invoke(f"{prefix}fail", {"reason": "no way"})
    assert result["outcome"] == "PERMANENT"
    assert result["retryable"] is False
    assert "cannot do that: no way" in result["message"]
    assert server.calls["fail"] == before + 1


async def test_tools_of_a_stdio_server_are_imported_and_called(gateway: Gateway) -> None:
    prefix = f"{unique('local')}."
    command = [sys.executable, str(DEMO_SCRIPT)]
    answer = await imported(
        gateway, {"name": "local", "transport": "stdio", "command": command, "prefix": prefix}
    )
    assert f"{prefix}add" in answer["registered"]
    listed = (await gateway.http.get("/v1/tools", headers=gateway.admin_headers())).json()
    add = next(t for t in listed if t["name"] == f"{prefix}add")
    assert add["mcp"] == {
        "transport": "stdio",
        "url": None,
        "command": command,
        "remote_name": "add",
        "auth": None,
    }

    first = await gateway.invoke(f"{prefix}add", {"a": 1, "b": 2})
    assert first["outcome"] == "OK", first
    assert first["output"] == {"result": 3}
    second = await gateway.invoke(f"{prefix}add", {"a": 5, "b": 8})
    assert second["output"] == {"result": 13}
    together = await asyncio.gather(
        *(gateway.invoke(f"{prefix}add", {"a": n, "b": n}) for n in range(5))
    )
    assert [r["output"] for r in together] == [{"result": 2 * n} for n in range(5)]
    # One server process answers every call, and it counted exactly one per invoke.
    stats = await gateway.invoke(f"{prefix}stats", {})
    assert stats["outcome"] == "OK", stats
    assert stats["output"] == {"add": 7}


async def test_credentials_reach_the_server_and_never_the_caller(
    gateway: Gateway,
    demo: tuple[Demo, str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, url = demo
    secret = f"s3cret-{uuid.uuid4().hex}"
    prefix = f"{unique('auth')}."
    body = {
        "name": "authed",
        "url": url,
        "prefix": prefix,
        "credential": {"credential": "demo-key"},
        "credential_value": secret,
    }
    response = await import_server(gateway, body)
    assert response.status_code == 200, response.text
    assert secret not in response.text
    whoami = await gateway.invoke(f"{prefix}whoami", {})
    assert whoami["outcome"] == "OK", whoami
    # The server got "Bearer <secret>", and the gateway redacted it on the way back.
    assert whoami["output"] == {"result": REDACTED}

    # A stdio server gets the credential in the environment variable the header names,
    # and nothing of the gateway's own environment.
    monkeypatch.setenv("MAINSTAY_TEST_GATEWAY_ONLY", "not for tools")
    local = f"{unique('env')}."
    await imported(
        gateway,
        {
            "name": "local",
            "transport": "stdio",
            "command": [sys.executable, str(DEMO_SCRIPT)],
            "prefix": local,
            "credential": {"credential": "demo-env", "header": "DEMO_TOKEN", "prefix": ""},
            "credential_value": secret,
        },
    )
    token = await gateway.invoke(f"{local}env", {"name": "DEMO_TOKEN"})
    assert token["outcome"] == "OK", token
    assert token["output"] == {"result": REDACTED}
    leaked = await gateway.invoke(f"{local}env", {"name": "MAINSTAY_TEST_GATEWAY_ONLY"})
    assert leaked["output"] == {"result": ""}

    # What the server writes to stderr reaches the gateway's log, without the secret.
    caplog.set_level(logging.INFO, logger="mainstay.tools.mcp")
    marker = f"hello-{uuid.uuid4().hex}"
    shout = await gateway.invoke(f"{local}shout", {"text": marker})
    assert shout["outcome"] == "OK", shout
    for _ in range(600):  # stderr is read as it comes, apart from the answer
        lines = [r.getMessage() for r in caplog.records if marker in r.getMessage()]
        if lines:
            break
        await asyncio.sleep(0.05)
    assert len(lines) == 1
    assert lines[0].endswith(f"{marker} token={REDACTED}")
    assert secret not in caplog.text


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_a_server_that_goes_away_fails_transiently_and_is_reconnected(
    gateway: Gateway,
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/mcp"
    prefix = f"{unique('flaky')}."
    first = build()
    async with HttpServer(first.mcp.streamable_http_app(), port=port):
        await imported(gateway, {"name": "flaky", "url": url, "prefix": prefix})
        ok = await gateway.invoke(f"{prefix}add", {"a": 1, "b": 1})
        assert ok["outcome"] == "OK", ok
    down = await gateway.invoke(f"{prefix}add", {"a": 1, "b": 1})
    assert down["outcome"] == "TRANSIENT", down
    assert down["retryable"] is True
    assert f"tool '{prefix}add'" in down["message"]
    second = build()
    async with HttpServer(second.mcp.streamable_http_app(), port=port):
        back = await gateway.invoke(f"{prefix}add", {"a": 2, "b": 2})
        assert back["outcome"] == "OK", back
        assert back["output"] == {"result": 4}
        assert second.calls["add"] == 1


async def test_an_unreachable_server_cannot_be_imported(gateway: Gateway) -> None:
    response = await import_server(
        gateway, {"name": "nowhere", "url": f"http://127.0.0.1:{free_port()}/mcp"}
    )
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["type"] == "DependencyUnavailable"
    assert "MCP server 'nowhere'" in error["message"]
    assert "unreachable" in error["message"]

    missing = await import_server(
        gateway,
        {"name": "ghost", "transport": "stdio", "command": ["/nonexistent/mcp-server"]},
    )
    assert missing.status_code == 400, missing.text
    assert "MCP server 'ghost'" in missing.json()["error"]["message"]


async def test_importing_needs_the_admin_scope_and_a_valid_body(gateway: Gateway) -> None:
    denied = await gateway.http.post(
        "/v1/mcp/imports",
        json={"name": "demo", "url": "http://127.0.0.1:9/mcp"},
        headers=gateway.headers("acme", ["tools:call:*"]),
    )
    assert denied.status_code == 403
    no_command = await import_server(gateway, {"name": "local", "transport": "stdio"})
    assert no_command.status_code == 422
    assert "needs a command" in no_command.text


# -- serving ---------------------------------------------------------------------------


async def test_an_mcp_client_lists_the_tools_its_scopes_allow(gateway: Gateway) -> None:
    async with (
        bearer(gateway, tenant(), ["tools:call:calculator"]) as http,
        mcp_client(gateway, http) as client,
    ):
        tools = (await client.list_tools()).tools
        assert [t.name for t in tools] == ["calculator"]
        calculator = tools[0]
        assert calculator.description is not None
        assert "arithmetic" in calculator.description
        assert calculator.input_schema["required"] == ["expression"]
        assert calculator.output_schema is None  # a number, not an object


async def test_an_mcp_client_calls_a_tool_and_the_call_is_audited(gateway: Gateway) -> None:
    who = tenant()
    async with (
        bearer(gateway, who, ["tools:call:calculator"]) as http,
        mcp_client(gateway, http) as client,
    ):
        result = await client.call_tool("calculator", {"expression": "2*(3+4)"})
        assert result.is_error is False
        assert json.loads(text(result)) == 14
        assert result.meta is not None
        assert result.meta["mainstay/outcome"] == "OK"
        assert result.meta["mainstay/untrusted"] is True
        call_id = result.meta["mainstay/callId"]

    rows = await gateway.audit(who, count=1, params={"tool": "calculator"})
    assert [r["call_id"] for r in rows] == [call_id]
    assert rows[0]["channel"] == "mcp"
    assert rows[0]["outcome"] == "OK"
    assert rows[0]["principal"] == "mcp-agent"


async def test_invalid_arguments_come_back_as_a_tool_error_listing_the_problems(
    gateway: Gateway,
) -> None:
    async with (
        bearer(gateway, tenant(), ["tools:call:calculator"]) as http,
        mcp_client(gateway, http) as client,
    ):
        result = await client.call_tool("calculator", {"expression": 7, "precision": 2})
        assert result.is_error is True
        message = text(result)
        assert message.startswith("INVALID_ARGUMENTS: ")
        assert "- /expression: 7 is not of type 'string'" in message
        assert "'precision' was unexpected" in message

        denied = await client.call_tool("http_fetch", {"url": "http://127.0.0.1/"})
        assert denied.is_error is True
        assert text(denied).startswith("PERMISSION_DENIED: ")

        unknown = await client.call_tool("calculater", {"expression": "1"})
        assert unknown.is_error is True
        assert "did you mean: calculator" in text(unknown)


async def test_a_request_without_a_valid_token_is_refused_before_mcp(gateway: Gateway) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    headers = {"Accept": "application/json, text/event-stream"}
    missing = await gateway.http.post("/mcp", json=body, headers=headers)
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert missing.json()["error"]["type"] == "Unauthenticated"
    forged = await gateway.http.post(
        "/mcp", json=body, headers={**headers, "Authorization": "Bearer not-a-token"}
    )
    assert forged.status_code == 401
    assert 'error="invalid_token"' in forged.headers["www-authenticate"]


async def test_structured_output_passes_through_both_mcp_hops(
    gateway: Gateway, demo: tuple[Demo, str]
) -> None:
    # An agent speaking MCP to the gateway, which speaks MCP to the demo server.
    server, url = demo
    prefix = f"{unique('hop')}."
    await imported(gateway, {"name": "demo", "url": url, "prefix": prefix})
    before = server.calls["add"]
    for mode in ("auto", "legacy"):
        async with (
            bearer(gateway, tenant(), [f"tools:call:{prefix}add"]) as http,
            mcp_client(gateway, http, mode=mode) as client,
        ):
            tools = (await client.list_tools()).tools
            assert [t.name for t in tools] == [f"{prefix}add"]
            assert tools[0].output_schema is not None
            assert tools[0].annotations is not None
            assert tools[0].annotations.read_only_hint is True
            result = await client.call_tool(f"{prefix}add", {"a": 4, "b": 5})
            assert result.is_error is False, text(result)
            assert result.structured_content == {"result": 9}
            assert json.loads(text(result)) == {"result": 9}
    assert server.calls["add"] == before + 2
