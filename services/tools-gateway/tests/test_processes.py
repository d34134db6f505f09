"""Two real gateway processes (``python -m mainstay_tools_gateway``) sharing one database.

They load the same registry file at start, enforce one rate limit together,
and neither writes a credential to its log, even at DEBUG.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sys
import uuid
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import pytest_asyncio
import yaml

from mainstay_common.auth import TokenSigner
from mainstay_common.lifecycle import within
from mainstay_tools_gateway.store.vault import Vault

from .toolserver import ToolServer

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

pytestmark = pytest.mark.real


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Instance:
    def __init__(self, process: asyncio.subprocess.Process, port: int, log: Path) -> None:
        self.process = process
        self.url = f"http://127.0.0.1:{port}"
        self.log = log


def log_tail(log: Path) -> str:
    return log.read_text()[-3000:]


async def start_instance(env: dict[str, str], log: Path) -> Instance:
    port = free_port()
    handle = log.open("wb")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mainstay_tools_gateway",
        env={**env, "TOOLS_GATEWAY_HTTP_PORT": str(port)},
        stdout=handle,
        stderr=asyncio.subprocess.STDOUT,
    )
    handle.close()
    instance = Instance(process, port, log)
    async with httpx.AsyncClient() as client:
        for _ in range(600):
            if process.returncode is not None:
                raise AssertionError(f"gateway exited: {log_tail(log)}")
            with contextlib.suppress(httpx.TransportError):
                if (await client.get(f"{instance.url}/readyz")).status_code == 200:
                    return instance
            await asyncio.sleep(0.1)
    raise AssertionError(f"gateway did not become ready: {log_tail(log)}")


async def stop(instance: Instance) -> None:
    if instance.process.returncode is None:
        instance.process.terminate()
        try:
            await within(instance.process.wait(), 20)
        except TimeoutError:
            instance.process.kill()
            await instance.process.wait()


class Mesh:
    def __init__(
        self, a: Instance, b: Instance, signer: TokenSigner, tools: ToolServer, tool: str
    ) -> None:
        self.a, self.b, self.signer, self.tools, self.tool = a, b, signer, tools, tool

    def headers(self, subject: str, scopes: list[str], tenant: str = "acme") -> dict[str, str]:
        token = self.signer.mint(subject=subject, tenant=tenant, scopes=scopes)
        return {"Authorization": f"Bearer {token}"}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def mesh(
    kafka_bootstrap: str, postgres_dsn: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Mesh]:
    home = tmp_path_factory.mktemp("gateway-processes")
    signer = TokenSigner.generate()
    (home / "jwks.json").write_text(json.dumps(signer.jwks()))
    tool = f"quota_{uuid.uuid4().hex[:6]}"
    async with ToolServer() as tools:
        registry = {
            "tools": [
                {
                    "name": tool,
                    "kind": "http",
                    "description": "An echo with a quota, from the registry file.",
                    "http": {"url": f"{tools.base_url}/echo", "auth": {"credential": "token"}},
                    "rate_limit": {
                        "per_agent": {"per_second": 0.001, "burst": 3},
                        "all_agents": {"per_second": 0.001, "burst": 4},
                    },
                }
            ]
        }
        (home / "tools.yaml").write_text(yaml.safe_dump(registry))
        env = {
            **os.environ,
            "MAINSTAY_KAFKA_BOOTSTRAP": kafka_bootstrap,
            "MAINSTAY_KAFKA_TOPIC_PREFIX": f"p{uuid.uuid4().hex[:8]}.",
            "MAINSTAY_KAFKA_SESSION_TIMEOUT_MS": "2000",
            "MAINSTAY_KAFKA_HEARTBEAT_INTERVAL_MS": "300",
            "MAINSTAY_POSTGRES_DSN": postgres_dsn,
            "MAINSTAY_AUTH_JWKS_FILE": str(home / "jwks.json"),
            "MAINSTAY_TELEMETRY_LOG_LEVEL": "DEBUG",
            "TOOLS_GATEWAY_VAULT_KEYS": json.dumps([Vault.generate_key()]),
            "TOOLS_GATEWAY_REGISTRY_FILE": str(home / "tools.yaml"),
            "TOOLS_GATEWAY_SHUTDOWN_GRACE_S": "2",
        }
        a = await start_instance(env, home / "a.log")
        try:
            b = await start_instance(env, home / "b.log")
            try:
                yield Mesh(a, b, signer, tools, tool)
            finally:
                await stop(b)
        finally:
            await stop(a)


async def call(client: httpx.AsyncClient, url: str, mesh: Mesh, subject: str) -> dict[str, Any]:
    response = await client.post(
        f"{url}/v1/tools/{mesh.tool}/invoke",
        json={"arguments": {"n": 1}},
        headers=mesh.headers(subject, [f"tools:call:{mesh.tool}"]),
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


async def test_the_registry_file_is_loaded_and_limits_hold_across_instances(mesh: Mesh) -> None:
    secret = f"tok-{uuid.uuid4().hex}"
    async with httpx.AsyncClient(timeout=30) as client:
        for instance in (mesh.a, mesh.b):
            listed = await client.get(
                f"{instance.url}/v1/tools", headers=mesh.headers("ops", ["tools:admin"])
            )
            assert mesh.tool in [t["name"] for t in listed.json()]
        response = await client.put(
            f"{mesh.a.url}/v1/tools/{mesh.tool}/credentials/token",
            json={"value": secret, "tenant": "acme"},
            headers=mesh.headers("ops", ["tools:admin"]),
        )
        assert response.status_code == 204, response.text

        # Agent x alternates between the instances: 3 calls in its burst, not 6.
        outcomes = [
            (await call(client, instance.url, mesh, "x"))["outcome"]
            for instance in (mesh.a, mesh.b) * 3
        ]
        assert sorted(outcomes) == ["OK"] * 3 + ["RATE_LIMITED"] * 3
        assert outcomes[:3] == ["OK", "OK", "OK"]
        # The tool's shared bucket (4) has one token left for everybody else.
        y = [(await call(client, url, mesh, "y"))["outcome"] for url in (mesh.b.url, mesh.a.url)]
        assert y == ["OK", "RATE_LIMITED"]
        assert mesh.tools.calls["echo"] == 4
        assert mesh.tools.last_headers["authorization"] == f"Bearer {secret}"

        # By default a gateway runs no MCP server command on its host.
        stdio = await client.put(
            f"{mesh.a.url}/v1/tools/local_shell",
            json={
                "name": "local_shell",
                "kind": "mcp",
                "mcp": {"transport": "stdio", "command": ["sh"], "remote_name": "x"},
            },
            headers=mesh.headers("ops", ["tools:admin"]),
        )
        assert stdio.status_code == 400
        assert "TOOLS_GATEWAY_MCP_STDIO_ENABLED" in stdio.json()["error"]["message"]

    for instance in (mesh.a, mesh.b):
        log = instance.log.read_text()
        assert "registered 1 tools from" in log
        assert "DEBUG" in log  # the check below is meaningful: everything was logged
        assert secret not in log
