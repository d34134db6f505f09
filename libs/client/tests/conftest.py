"""One mesh for every test of the client and the CLI: identity, the ledger, memory, the
tools gateway, the supervisor and an execution instance on loopback, on the real broker
and PostgreSQL, with the scripted model server standing in for providers.

``cli`` runs ``python -m mainstay_client.cli`` as a user would, with the environment
pointing at that mesh and the token of one of the tenant's principals.
"""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import pytest
import pytest_asyncio

from mainstay_common.lifecycle import within
from mainstay_execution.testing.mesh import FullMesh, running_mesh

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

__all__ = ["Cli", "CliResult", "FullMesh"]

WRITER = "writer"
"""An agent registered from the start (no memory recall or writes)."""


@pytest_asyncio.fixture(scope="package", loop_scope="session")
async def mesh(
    kafka_bootstrap: str, postgres_dsn: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[FullMesh]:
    home = tmp_path_factory.mktemp("client-mesh")
    async with running_mesh(kafka_bootstrap, postgres_dsn, home) as full, full.execution():
        await full.register_agent(WRITER, memory={"recall": False, "remember": []})
        yield full


@dataclass(frozen=True)
class CliResult:
    code: int
    stdout: str
    stderr: str


class Cli(Protocol):
    async def __call__(
        self, *args: str, who: str = "operator", env: dict[str, str] | None = None
    ) -> CliResult: ...


async def token_of(mesh: FullMesh, who: str) -> str:
    """A token of ``who``: ``operator`` (the admin scopes), ``submitter`` (tasks, tools,
    memory of the registered agents) or a human such as ``alice``."""
    if who == "submitter":
        return await mesh.token()
    headers = await (mesh.operator_headers() if who == "operator" else mesh.human_headers(who))
    return headers["Authorization"].removeprefix("Bearer ")


def cli_environment(mesh: FullMesh, token: str) -> dict[str, str]:
    """The environment a user of this mesh would set."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("MAINSTAY_")},
        "MAINSTAY_TOKEN": token,
        "MAINSTAY_KAFKA_BOOTSTRAP": mesh.kafka.bootstrap,
        "MAINSTAY_KAFKA_TOPIC_PREFIX": mesh.kafka.topic_prefix,
        "MAINSTAY_MEMORY_TARGET": mesh.memory_target,
        "MAINSTAY_SUPERVISOR_URL": mesh.supervisor_url,
        "MAINSTAY_IDENTITY_URL": mesh.identity_url,
        "MAINSTAY_LEDGER_URL": mesh.ledger_url,
        "MAINSTAY_TOOLS_GATEWAY_URL": mesh.gateway_url,
        "COLUMNS": "200",
    }


@pytest.fixture
def cli(mesh: FullMesh) -> Cli:
    async def run(*args: str, who: str = "operator", env: dict[str, str] | None = None) -> Any:
        environment = {**cli_environment(mesh, await token_of(mesh, who)), **(env or {})}
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "mainstay_client.cli",
            *args,
            env=environment,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await within(process.communicate(), 180)
        assert process.returncode is not None
        return CliResult(process.returncode, stdout.decode(), stderr.decode())

    return run
