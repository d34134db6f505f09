"""The whole mesh in one process: every service on loopback, for end-to-end tests and benchmarks.

:func:`running_mesh` starts, on one broker topic prefix and each on a database
of its own: the identity service, the ledger (announcing usage), memory (local
embedder), the tools gateway with a counting :class:`~mainstay_execution.testing.toolserver.ToolServer`
behind its HTTP tools, the supervisor, and a scripted
:class:`~mainstay_execution.testing.fake_models.FakeModelServer`. Execution
instances are started by the tests themselves, in-process
(:meth:`FullMesh.execution`) or as ``python -m mainstay_execution``
(:meth:`FullMesh.execution_process`), all on one execution database.

Tokens: the identity service signs every token the services see. Each service
verifies against its JWKS URL and reads its revocation feed (no JWKS file), so
a token identity issues works everywhere and nothing else does. The only other
signer is the operator key identity itself trusts (a JWKS file, as
``running_identity`` sets it up), used to register the tenant's principals:
``operator`` (the admin scopes of the ledger, the gateway and the supervisor),
``submitter`` (whose tokens tasks carry), the mail principals of execution,
the ledger and the supervisor, and the human ``alice``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import asyncpg
import httpx
from pydantic import SecretStr
from pydantic_settings import BaseSettings

from mainstay_common.bus import Bus
from mainstay_common.lifecycle import within
from mainstay_common.settings import (
    AuthSettings,
    HeartbeatSettings,
    KafkaSettings,
    PostgresSettings,
    RetrySettings,
)
from mainstay_common.testing import temporary_database
from mainstay_contracts.execution import SUBMIT_TASK, SubmitTaskCommand
from mainstay_execution.app import ExecutionApp
from mainstay_execution.settings import ExecutionSettings
from mainstay_execution.testing.events import final_events, task_events
from mainstay_execution.testing.fake_models import FakeModelServer
from mainstay_execution.testing.toolserver import ToolServer
from mainstay_identity.testing import running_identity
from mainstay_ledger.app import LedgerApp
from mainstay_ledger.settings import LedgerSettings
from mainstay_ledger.testing import check_invariants
from mainstay_memory.app import MemoryApp
from mainstay_memory.settings import CurationSettings, MemorySettings
from mainstay_supervisor.app import SupervisorApp
from mainstay_supervisor.settings import SupervisorSettings
from mainstay_tools_gateway.app import ToolsGatewayApp
from mainstay_tools_gateway.settings import BreakerSettings, ToolsGatewaySettings
from mainstay_tools_gateway.store.vault import Vault

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterable, Mapping
    from pathlib import Path

    from mainstay_identity.testing import Identity

__all__ = [
    "HUMAN",
    "MODEL_PRICES",
    "FullMesh",
    "ServiceProcess",
    "running_mesh",
    "settings_environment",
]

HUMAN = "alice"
"""The tenant's human: a ``user`` principal, the agents' escalation contact."""
MODEL_PRICES: dict[str, dict[str, int]] = {
    "primary": {"input_per_mtok": 2_000_000, "output_per_mtok": 8_000_000},
    "backup": {"input_per_mtok": 1_000_000, "output_per_mtok": 4_000_000},
}
"""The ledger's prices of the two models of every agent, in micro-units per million
tokens (so a token of ``primary`` costs 2 micro-units in, 8 out)."""
OPERATOR_SCOPES = (
    "ledger:admin",
    "ledger:read",
    "tools:admin",
    "tools:audit",
    "supervisor:admin",
    "supervisor:read",
)
_FAST_RETRY = RetrySettings(tier_delays_s=[0.2, 0.4, 0.6], blocking_backoff_s=0.05)


@dataclass
class ServiceProcess:
    """One service run as ``python -m <module>``, ready when it is handed out."""

    name: str
    process: asyncio.subprocess.Process
    url: str
    """Its HTTP address (``/readyz``, ``/metrics``)."""
    log: Path

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    async def kill(self) -> None:
        """SIGKILL: the instance dies mid-work, as in a crash."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
        await self.process.wait()

    async def stop(self, grace_s: float = 20.0) -> None:
        """SIGTERM, then SIGKILL after ``grace_s``: a graceful shutdown."""
        if self.process.returncode is None:
            self.process.terminate()
            try:
                await within(self.process.wait(), grace_s)
            except TimeoutError:
                await self.kill()

    def log_tail(self, characters: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-characters:] if self.log.exists() else ""


@dataclass
class FullMesh:
    """The running mesh and what tests do with it. One tenant per mesh."""

    tenant: str
    kafka: KafkaSettings
    home: Path
    identity: Identity
    models: FakeModelServer
    tools: ToolServer
    bus: Bus
    ledger: LedgerApp
    memory: MemoryApp
    gateway_url: str
    supervisor: SupervisorApp
    ledger_dsn: str
    execution_dsn: str
    secrets: dict[str, str]
    """Client secrets of the tenant's principals, by name."""
    http: httpx.AsyncClient
    apps: list[ExecutionApp] = field(default_factory=list)
    processes: list[ServiceProcess] = field(default_factory=list)
    _submitter_scopes: set[str] = field(default_factory=set)
    _agents: set[str] = field(default_factory=set)

    # -- addresses --------------------------------------------------------------

    @property
    def identity_url(self) -> str:
        return f"http://127.0.0.1:{self.identity.app.http_port}"

    @property
    def ledger_url(self) -> str:
        return f"http://127.0.0.1:{self.ledger.http_port}"

    @property
    def supervisor_url(self) -> str:
        return f"http://127.0.0.1:{self.supervisor.http_port}"

    @property
    def memory_target(self) -> str:
        return f"127.0.0.1:{self.memory.grpc_port}"

    @property
    def mail_credentials(self) -> list[str]:
        """What execution sends escalations with: ``<tenant>/execution:<secret>``."""
        return [f"{self.tenant}/execution:{self.secrets['execution']}"]

    # -- tokens -------------------------------------------------------------------

    async def _client_token(self, name: str, scopes: Iterable[str] = ()) -> str:
        form = {"scope": " ".join(sorted(scopes))} if scopes else {}
        answer = await self.identity.token(f"{self.tenant}/{name}", self.secrets[name], **form)
        assert answer.status_code == 200, answer.text
        return str(answer.json()["access_token"])

    def default_scopes(self) -> list[str]:
        """``execution:submit``, ``tools:call:*`` and memory read and write for every agent
        registered so far."""
        scopes = ["execution:submit", "tools:call:*"]
        for agent in sorted(self._agents):
            scopes += [f"memory:read:{agent}", f"memory:write:{agent}"]
        return scopes

    async def token(self, scopes: Iterable[str] | None = None) -> str:
        """A token identity issued to the tenant's ``submitter`` with exactly ``scopes``
        (default: :meth:`default_scopes`); the principal is granted them first if need be."""
        wanted = set(self.default_scopes() if scopes is None else scopes)
        if not wanted <= self._submitter_scopes:
            self._submitter_scopes |= wanted
            await _put_principal(
                self.identity, self.tenant, "submitter", "service", self._submitter_scopes
            )
        return await self._client_token("submitter", wanted)

    async def operator_headers(self) -> dict[str, str]:
        """The tenant's operator (admin of the ledger, the gateway and the supervisor)."""
        return {"Authorization": f"Bearer {await self._client_token('operator')}"}

    # -- humans -----------------------------------------------------------------------

    async def add_human(self, name: str) -> None:
        """Register another ``user`` principal (``alice`` is there from the start)."""
        self.secrets[name] = await self.identity.register(self.tenant, name, [], kind="user")

    async def human_headers(self, human: str = HUMAN) -> dict[str, str]:
        return {"Authorization": f"Bearer {await self._client_token(human)}"}

    async def inbox(self, human: str = HUMAN) -> list[dict[str, Any]]:
        answer = await self.http.get(
            f"{self.identity_url}/v1/inbox", headers=await self.human_headers(human)
        )
        assert answer.status_code == 200, answer.text
        return list(answer.json()["messages"])

    async def pending_approvals(self, human: str = HUMAN) -> list[dict[str, Any]]:
        """The approvals ``human`` may answer that wait for an answer."""
        answer = await self.http.get(
            f"{self.identity_url}/v1/approvals",
            params={"status": "pending"},
            headers=await self.human_headers(human),
        )
        assert answer.status_code == 200, answer.text
        return list(answer.json()["approvals"])

    async def wait_approvals(
        self, human: str = HUMAN, count: int = 1, wait_s: float = 30
    ) -> list[dict[str, Any]]:
        """:meth:`pending_approvals`, once there are at least ``count``."""
        deadline = asyncio.get_running_loop().time() + wait_s
        while True:
            pending = await self.pending_approvals(human)
            if len(pending) >= count or asyncio.get_running_loop().time() > deadline:
                assert len(pending) >= count, f"{human} has {len(pending)} pending approvals"
                return pending
            await asyncio.sleep(0.2)

    async def answer(
        self, human: str, approval_id: str, decision: str, reason: str = ""
    ) -> dict[str, Any]:
        """Answer an approval as ``human`` (``approve``, ``deny`` or another option)."""
        answer = await self.http.post(
            f"{self.identity_url}/v1/approvals/{approval_id}/decision",
            json={"decision": decision, "reason": reason},
            headers=await self.human_headers(human),
        )
        assert answer.status_code == 201, answer.text
        return dict(answer.json())

    # -- agents, tools and prices -----------------------------------------------------------

    async def register_agent(
        self, name: str, *, wait: bool | None = None, **fields: Any
    ) -> dict[str, Any]:
        """Register (the next version of) an agent through the supervisor's HTTP API.

        Its models are ``primary`` (OpenAI API) then ``backup`` (Anthropic API) on the
        fake model server and its escalation contact is ``alice``, unless ``fields`` say
        otherwise. With ``wait`` (default: when an execution instance runs) this returns
        once the execution database knows that version. Returns the supervisor's record.
        """
        body = {
            "identity": name,
            "models": [
                self.models.model_ref("openai", "primary").model_dump(exclude_none=True),
                self.models.model_ref("anthropic", "backup").model_dump(exclude_none=True),
            ],
            "escalation": [HUMAN],
            **fields,
        }
        answer = await self.http.put(
            f"{self.supervisor_url}/v1/tenants/{self.tenant}/agents/{name}",
            json=body,
            headers=await self.operator_headers(),
        )
        assert answer.status_code in {200, 201}, answer.text
        record = dict(answer.json())
        self._agents.add(name)
        if wait if wait is not None else self.running:
            await self.wait_agent(name, int(record["version"]))
        return record

    async def wait_agent(self, name: str, version: int = 1, wait_s: float = 30) -> None:
        """Until the execution database knows version ``version`` (or later) of the agent."""
        await self._wait_row(
            "SELECT 1 FROM agents WHERE tenant = $1 AND name = $2 AND latest_version >= $3",
            (self.tenant, name, version),
            f"agent {self.tenant}/{name} v{version}",
            wait_s,
        )

    async def register_tool(
        self,
        name: str,
        *,
        side_effects: bool = False,
        price_micros: int = 0,
        wait: bool | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """Register an HTTP tool on the tool server with the gateway, priced ``price_micros``
        a call in the gateway's spec and in the ledger's price book (``tool:<name>``).

        It takes any object (``input_schema`` in ``fields`` to change that); its retry hint
        backs off 50 ms. With ``wait`` (default: when an execution instance runs) this
        returns once the execution database has the tool. Returns the gateway's spec.
        """
        spec = {
            "name": name,
            "kind": "http",
            "http": {"url": self.tools.url(name)},
            "description": f"The test tool {name}.",
            "input_schema": {"type": "object"},
            "side_effects": side_effects,
            "price_micros": price_micros,
            "retry": {"max_attempts": 5, "backoff_s": 0.05},
            **fields,
        }
        headers = await self.operator_headers()
        answer = await self.http.put(
            f"{self.gateway_url}/v1/tools/{name}", json=spec, headers=headers
        )
        assert answer.status_code == 200, answer.text
        await self.set_price(f"tool:{name}", per_call=price_micros)
        if wait if wait is not None else self.running:
            await self._wait_row("SELECT 1 FROM tools WHERE name = $1", (name,), f"tool {name}", 30)
        return dict(answer.json()["tool"])

    async def set_price(self, item: str, **prices: int) -> dict[str, Any]:
        """A new version of ``item``'s price for the tenant (``model:<m>`` or ``tool:<t>``;
        ``prices``: input_per_mtok, output_per_mtok, cached_per_mtok, per_call)."""
        answer = await self.http.post(
            f"{self.ledger_url}/v1/prices",
            json={"item": item, "tenant": self.tenant, **prices},
            headers=await self.operator_headers(),
        )
        assert answer.status_code == 201, answer.text
        return dict(answer.json())

    # -- tasks -------------------------------------------------------------------------

    async def submit(
        self,
        task_id: str,
        agent: str,
        input: str,
        max_cost_micros: int | None = None,
        *,
        token: str | None = None,
        **fields: Any,
    ) -> str:
        """Publish ``execution.cmd.submit-task.v1`` with the submitter's token (default scopes
        unless ``token`` is given); returns the task id."""
        await self.bus.publish(
            SUBMIT_TASK,
            SubmitTaskCommand(
                task_id=task_id,
                tenant=self.tenant,
                agent=agent,
                input=input,
                token=token or await self.token(),
                max_cost_micros=max_cost_micros,
                **fields,
            ),
            tenant=self.tenant,
            correlation_id=task_id,
        )
        return task_id

    async def events(
        self,
        task_id: str,
        until: Callable[[dict[str, Any]], bool] | None = None,
        wait_s: float = 30,
    ) -> list[dict[str, Any]]:
        """The task's events on ``execution.evt.task.v1``: those so far, or (with ``until``)
        once one that ``until`` accepts is among them."""
        return await task_events(self.kafka, task_id, until, wait_s)

    async def final(self, task_id: str, wait_s: float = 60) -> list[dict[str, Any]]:
        """The task's events once it ended (within ``wait_s``); the last one is how."""
        return await final_events(self.kafka, task_id, wait_s)

    # -- execution instances -----------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether an execution instance (in-process or a process) runs."""
        return bool(self.apps) or any(
            p.returncode is None for p in self.processes if p.name == "execution"
        )

    def execution_settings(self, **overrides: Any) -> ExecutionSettings:
        """An instance's settings: every service of the mesh, fast timings, no heartbeats."""
        return ExecutionSettings(
            **{
                "http_port": 0,
                "shutdown_grace_s": 2.0,
                "kafka": self.kafka,
                "postgres": PostgresSettings(dsn=self.execution_dsn),
                "retry": _FAST_RETRY,
                "auth": _identity_auth(self.identity_url),
                "heartbeat": HeartbeatSettings(interval_s=0),
                "ownership_check_s": 0.2,
                "retry_base_s": 0.05,
                "retry_max_s": 0.2,
                "wait_poll_s": 0.2,
                "ledger": True,
                "memory_target": self.memory_target,
                "identity_url": self.identity_url,
                "mail_credentials": self.mail_credentials,
                **overrides,
            }
        )

    @contextlib.asynccontextmanager
    async def execution(self, **overrides: Any) -> AsyncIterator[ExecutionApp]:
        """An in-process execution instance (``overrides``: its settings)."""
        async with ExecutionApp(self.execution_settings(**overrides)) as app:
            self.apps.append(app)
            try:
                yield app
            finally:
                self.apps.remove(app)

    @contextlib.asynccontextmanager
    async def execution_process(
        self, env: Mapping[str, str] | None = None, ready_s: float = 120, **overrides: Any
    ) -> AsyncIterator[ServiceProcess]:
        """``python -m mainstay_execution`` with the settings of :meth:`execution` as its
        environment (plus ``env``), once ``/readyz`` answers 200; stopped (SIGTERM) at the
        end unless it was killed."""
        port = _free_port()
        settings = self.execution_settings(**{**overrides, "http_port": port})
        count = sum(p.name == "execution" for p in self.processes)
        instance = await start_process(
            "execution", settings, port, self.home / f"execution-{count + 1}.log", env
        )
        self.processes.append(instance)
        try:
            await _wait_ready(instance, ready_s)
            yield instance
        finally:
            await instance.stop()

    # -- what happened -------------------------------------------------------------------

    async def ledger_rows(self, query: str, *args: Any) -> list[asyncpg.Record]:
        """Rows of a query on the ledger's schema."""
        return await _fetch(self.ledger_dsn, "ledger", query, *args)

    async def ledger_balanced(self) -> None:
        """Assert the ledger's invariants (:func:`mainstay_ledger.testing.check_invariants`): the books balance,
        holds match their transfers and usage, nothing is posted twice."""
        await check_invariants(self.ledger_rows)

    async def execution_rows(self, query: str, *args: Any) -> list[asyncpg.Record]:
        """Rows of a query on the execution service's schema."""
        return await _fetch(self.execution_dsn, "execution", query, *args)

    def tool_calls(self, tool: str) -> int:
        """Calls of ``tool`` that reached the tool server (503s included)."""
        return self.tools.calls(tool)

    def tool_calls_by_key(self, tool: str) -> dict[str, int]:
        """Calls of ``tool`` that reached the tool server, per idempotency key."""
        return self.tools.by_key(tool)

    def tool_effects_by_key(self, tool: str) -> dict[str, int]:
        """Calls of ``tool`` that succeeded, per idempotency key."""
        return self.tools.effects_by_key(tool)

    async def _wait_row(self, query: str, args: tuple[Any, ...], what: str, wait_s: float) -> None:
        deadline = asyncio.get_running_loop().time() + wait_s
        while asyncio.get_running_loop().time() < deadline:
            try:
                if await self.execution_rows(query, *args):
                    return
            except asyncpg.UndefinedTableError:
                pass  # no instance has migrated the schema yet
            await asyncio.sleep(0.05)
        raise AssertionError(f"{what} never reached the execution database")


# -- starting it ----------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def running_mesh(
    kafka_bootstrap: str, postgres_dsn: str, home: Path, *, gateway_process: bool = False
) -> AsyncIterator[FullMesh]:
    """Every service of the mesh but execution, on loopback; see the module docstring.

    ``gateway_process``: the tools gateway runs as ``python -m mainstay_tools_gateway``
    rather than in this process (a benchmark's steps then do not share its event loop).
    """
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    kafka = KafkaSettings(
        bootstrap=kafka_bootstrap,
        topic_prefix=f"e{uuid.uuid4().hex[:8]}.",
        session_timeout_ms=2000,
        heartbeat_interval_ms=300,
    )
    async with _closing_within(_CLOSE_WITHIN_S) as stack:

        async def database(prefix: str) -> str:
            return await stack.enter_async_context(temporary_database(postgres_dsn, prefix=prefix))

        tools = await stack.enter_async_context(ToolServer())
        models = await stack.enter_async_context(FakeModelServer())
        http = await stack.enter_async_context(httpx.AsyncClient(timeout=30, trust_env=False))
        identity = await stack.enter_async_context(
            running_identity(kafka_bootstrap, postgres_dsn, home, kafka=kafka, token_ttl_s=3600)
        )
        identity_url = f"http://127.0.0.1:{identity.app.http_port}"
        secrets = {
            "operator": await identity.register(
                tenant, "operator", list(OPERATOR_SCOPES), kind="service"
            ),
            HUMAN: await identity.register(tenant, HUMAN, [], kind="user"),
        }
        for mailer in ("execution", "ledger", "supervisor"):
            secrets[mailer] = await identity.register(tenant, mailer, [], kind="service")
        await _put_principal(identity, tenant, "submitter", "service", set())
        secrets["submitter"] = await _new_secret(identity, tenant, "submitter")

        auth = _identity_auth(identity_url)
        common: dict[str, Any] = {
            "http_port": 0,
            "shutdown_grace_s": 2.0,
            "kafka": kafka,
            "retry": _FAST_RETRY,
            "auth": auth,
            "heartbeat": HeartbeatSettings(interval_s=0),
        }
        ledger_dsn = await database("ledger_e2e")
        ledger = await stack.enter_async_context(
            LedgerApp(
                LedgerSettings(
                    **common,
                    postgres=PostgresSettings(dsn=ledger_dsn),
                    usage_events=True,
                    close_grace_s=0,
                    sweep_interval_s=0.2,
                    identity_url=identity_url,
                    approval_credentials=[f"{tenant}/ledger:{secrets['ledger']}"],
                )
            )
        )
        memory = await stack.enter_async_context(
            MemoryApp(
                MemorySettings(
                    **common,
                    grpc_port=0,
                    postgres=PostgresSettings(dsn=await database("memory_e2e")),
                    curation=CurationSettings(sweep_interval_s=0.2),
                )
            )
        )
        gateway_port = _free_port() if gateway_process else 0
        gateway_settings = ToolsGatewaySettings(
            **{**common, "http_port": gateway_port},
            postgres=PostgresSettings(dsn=await database("tools_e2e")),
            vault_keys=[Vault.generate_key()],
            breaker=BreakerSettings(failure_threshold=5, open_s=1.0),
        )
        processes: list[ServiceProcess] = []
        if gateway_process:
            gateway = await start_process(
                "tools-gateway", gateway_settings, gateway_port, home / "tools-gateway.log"
            )
            processes.append(gateway)
            stack.push_async_callback(gateway.stop)
            await _wait_ready(gateway, 120)
            gateway_url = gateway.url
        else:
            app = await stack.enter_async_context(ToolsGatewayApp(gateway_settings))
            gateway_url = f"http://127.0.0.1:{app.http_port}"
        supervisor = await stack.enter_async_context(
            SupervisorApp(
                SupervisorSettings(
                    **common,
                    postgres=PostgresSettings(dsn=await database("supervisor_e2e")),
                    identity_url=identity_url,
                    mail_credentials=[f"{tenant}/supervisor:{secrets['supervisor']}"],
                )
            )
        )
        bus = await stack.enter_async_context(Bus(service="tests", kafka=kafka))
        mesh = FullMesh(
            tenant=tenant,
            kafka=kafka,
            home=home,
            identity=identity,
            models=models,
            tools=tools,
            bus=bus,
            ledger=ledger,
            memory=memory,
            gateway_url=gateway_url,
            supervisor=supervisor,
            ledger_dsn=ledger_dsn,
            execution_dsn=await database("execution_e2e"),
            secrets=secrets,
            http=http,
            processes=processes,
        )
        for model, prices in MODEL_PRICES.items():
            await mesh.set_price(f"model:{model}", **prices)
        try:
            yield mesh
        finally:
            for process in mesh.processes:
                await process.kill()


# -- helpers -----------------------------------------------------------------------------------

_CLOSE_WITHIN_S = 120.0  # closing takes a few seconds; beyond this a part is stuck


@contextlib.asynccontextmanager
async def _closing_within(seconds: float) -> AsyncIterator[contextlib.AsyncExitStack]:
    """An exit stack whose closing is cut off after ``seconds``: the part that hangs is
    cancelled (the error's traceback shows where it waited) and the parts started before
    it still close, rather than leaving the whole mesh running in the test's event loop."""
    stack = contextlib.AsyncExitStack()
    raised: BaseException | None = None
    try:
        yield stack
    except BaseException as exc:
        raised = exc
        raise
    finally:
        # The block's error goes to the parts closing, so an error of theirs names it
        # as its context (``aclose()`` would cut it off the chain).
        async with asyncio.timeout(seconds):
            await stack.__aexit__(type(raised) if raised else None, raised, None)


def _identity_auth(identity_url: str) -> AuthSettings:
    """Verify tokens against the identity service's JWKS and revocation feed (no file)."""
    return AuthSettings(
        jwks_url=f"{identity_url}/.well-known/jwks.json",
        jwks_file=None,
        revocations_url=f"{identity_url}/v1/revocations",
        revocations_poll_s=0.5,
    )


async def _put_principal(
    identity: Identity, tenant: str, name: str, kind: str, scopes: Iterable[str]
) -> None:
    """Register or update a principal, keeping its secret."""
    answer = await identity.http.put(
        f"/v1/tenants/{tenant}/principals/{name}",
        json={"kind": kind, "scopes": sorted(scopes)},
        headers=identity.admin_headers(tenant),
    )
    assert answer.status_code in {200, 201}, answer.text


async def _new_secret(identity: Identity, tenant: str, name: str) -> str:
    answer = await identity.http.post(
        f"/v1/tenants/{tenant}/principals/{name}/secret", headers=identity.admin_headers(tenant)
    )
    assert answer.status_code == 200, answer.text
    return str(answer.json()["client_secret"])


async def _fetch(dsn: str, schema: str, query: str, *args: Any) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(dsn, server_settings={"search_path": schema})
    try:
        return list(await connection.fetch(query, *args))
    finally:
        await connection.close()


def settings_environment(settings: BaseSettings) -> dict[str, str]:
    """The environment variables that give a service started from the environment the
    settings that were set explicitly on ``settings`` (nested groups under their own
    prefixes, e.g. ``MAINSTAY_KAFKA_BOOTSTRAP``)."""
    prefix = str(settings.model_config.get("env_prefix", ""))
    env: dict[str, str] = {}
    for name in sorted(settings.model_fields_set):
        value = getattr(settings, name)
        if isinstance(value, BaseSettings):
            env.update(settings_environment(value))
        elif value is not None:  # None is each of these fields' default or means "unset"
            env[f"{prefix}{name}".upper()] = _env_value(value)
    return env


def _env_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, list | dict):
        return json.dumps(value, default=_plain)
    return str(value)


def _plain(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    raise TypeError(f"cannot put {type(value).__name__} in the environment")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def start_process(
    name: str,
    settings: BaseSettings,
    port: int,
    log: Path,
    env: Mapping[str, str] | None = None,
) -> ServiceProcess:
    """``python -m mainstay_<name>`` with ``settings`` (its HTTP port ``port``) as its
    environment, the caller's own ``MAINSTAY_*`` and service variables left out."""
    module = f"mainstay_{name.replace('-', '_')}"
    own = str(settings.model_config.get("env_prefix", ""))
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("MAINSTAY_", own))},
        **settings_environment(settings),
        "PYTHONUNBUFFERED": "1",
        **(env or {}),
    }
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            module,
            env=environment,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
        )
    return ServiceProcess(name=name, process=process, url=f"http://127.0.0.1:{port}", log=log)


async def _wait_ready(instance: ServiceProcess, ready_s: float) -> None:
    deadline = asyncio.get_running_loop().time() + ready_s
    async with httpx.AsyncClient(timeout=2.0, trust_env=False) as client:
        while asyncio.get_running_loop().time() < deadline:
            if instance.returncode is not None:
                raise AssertionError(
                    f"{instance.name} exited with {instance.returncode}:\n{instance.log_tail()}"
                )
            with contextlib.suppress(httpx.TransportError):
                if (await client.get(f"{instance.url}/readyz")).status_code == 200:
                    return
            await asyncio.sleep(0.2)
    raise AssertionError(f"execution was not ready within {ready_s:.0f}s:\n{instance.log_tail()}")
