"""``EmbeddedStack``: start, inspect and stop the development stack of one home folder.

``up`` brings up the broker and PostgreSQL (embedded, or waits for the external
ones named in the environment), creates the registered topics, writes the
development secrets (Fernet key files), starts the identity service and waits
until it is ready, has it sign ``admin.token``, then starts every other service
pointed at its JWKS and revocation feed; ``down`` stops exactly the processes
``up`` recorded, services first. Both are idempotent and take the home's lock,
so the CLI, the pytest plugin and the demo can all drive it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from mainstay_common.db import redact_dsn
from mainstay_common.devstack._broker import (
    broker_command,
    create_topics,
    tansu_binary,
    wait_for_broker,
)
from mainstay_common.devstack._credentials import ensure_mail_credentials
from mainstay_common.devstack._home import BROKER, POSTGRES, StackError, StackHome, resolve_home
from mainstay_common.devstack._postgres import (
    EmbeddedPostgres,
    ensure_vector,
    load_embedded_postgres,
    wait_for_postgres,
)
from mainstay_common.devstack._process import (
    ProcessRecord,
    live_process,
    load_record,
    save_record,
    spawn,
    stop_process,
    tail,
    tcp_port_open,
)
from mainstay_common.devstack._services import (
    IDENTITY,
    ServiceSpec,
    discover_services,
    identity_base_url,
    identity_port,
    service_environment,
)
from mainstay_common.devstack._status import ComponentStatus, read_status
from mainstay_common.lifecycle import within
from mainstay_contracts import REGISTRY

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

__all__ = ["DEFAULT_KAFKA_PORT", "DEFAULT_PG_PORT", "EmbeddedStack"]

_logger = logging.getLogger("mainstay.devstack")

DEFAULT_KAFKA_PORT = 19092
DEFAULT_PG_PORT = 15432


class EmbeddedStack:
    """The development stack of one home folder.

    ``external_kafka`` / ``external_postgres`` name servers to use instead of
    starting the embedded ones. The other switches let the pytest plugin start
    only the broker and PostgreSQL.
    """

    def __init__(
        self,
        home: Path,
        repo_root: Path,
        *,
        kafka_port: int = DEFAULT_KAFKA_PORT,
        pg_port: int = DEFAULT_PG_PORT,
        host: str = "127.0.0.1",
        external_kafka: str | None = None,
        external_postgres: str | None = None,
        topic_prefix: str = "",
        create_topics: bool = True,
        write_credentials: bool = True,
        start_services: bool = True,
        startup_timeout_s: float = 60.0,
        stop_grace_s: float = 10.0,
        service_settle_s: float = 1.0,
        identity_port: int | None = None,
        report: Callable[[str], object] | None = None,
    ) -> None:
        """``identity_port`` defaults to ``IDENTITY_HTTP_PORT`` of this process's
        environment (the one services start with), else 8103."""
        self._home = StackHome(home.resolve())
        self._repo_root = repo_root.resolve()
        self._kafka_port = kafka_port
        self._pg_port = pg_port
        self._host = host
        self._external_kafka = external_kafka or None
        self._external_postgres = external_postgres or None
        self._topic_prefix = topic_prefix
        self._create_topics = create_topics
        self._write_credentials = write_credentials
        self._start_services = start_services
        self._timeout = startup_timeout_s
        self._grace = stop_grace_s
        self._settle = service_settle_s
        self._identity_port = identity_port
        self._report: Callable[[str], object] = report or _logger.info

    @classmethod
    def from_env(
        cls,
        *,
        home: Path | None = None,
        repo_root: Path | None = None,
        environ: Mapping[str, str] | None = None,
        kafka_port: int = DEFAULT_KAFKA_PORT,
        pg_port: int = DEFAULT_PG_PORT,
        start_services: bool = True,
        startup_timeout_s: float = 60.0,
        report: Callable[[str], object] | None = None,
    ) -> EmbeddedStack:
        """A stack configured like ``./dev up``: ``MAINSTAY_HOME``, ``MAINSTAY_KAFKA_BOOTSTRAP``,
        ``MAINSTAY_POSTGRES_DSN`` and ``MAINSTAY_KAFKA_TOPIC_PREFIX`` from ``environ``."""
        env = os.environ if environ is None else environ
        cwd = Path.cwd()
        return cls(
            home or resolve_home(cwd, env),
            repo_root or cwd,
            kafka_port=kafka_port,
            pg_port=pg_port,
            external_kafka=env.get("MAINSTAY_KAFKA_BOOTSTRAP"),
            external_postgres=env.get("MAINSTAY_POSTGRES_DSN"),
            topic_prefix=env.get("MAINSTAY_KAFKA_TOPIC_PREFIX", ""),
            start_services=start_services,
            startup_timeout_s=startup_timeout_s,
            report=report,
        )

    @property
    def home(self) -> StackHome:
        return self._home

    @property
    def repo_root(self) -> Path:
        return self._repo_root

    @property
    def kafka_bootstrap(self) -> str:
        """The external broker, else the running embedded one, else where ``up`` would start it."""
        if self._external_kafka:
            return self._external_kafka
        record = load_record(self._home.pid_file(BROKER))
        return record.address if record else f"{self._host}:{self._kafka_port}"

    @property
    def postgres_dsn(self) -> str:
        """The external DSN, else the running embedded server's, else the one ``up`` would start."""
        if self._external_postgres:
            return self._external_postgres
        record = load_record(self._home.pid_file(POSTGRES))
        return record.address if record else self._postgres().dsn

    def _postgres(self) -> EmbeddedPostgres:
        return EmbeddedPostgres(self._home.pgdata, self._pg_port, self._host)

    # -- up -----------------------------------------------------------------

    async def up(self) -> list[ComponentStatus]:
        """Start whatever is not running yet and return the resulting status."""
        async with self._home.locked():
            # Not a task group: a failing broker must not cancel PostgreSQL half
            # way through its start (the thread would go on without a record).
            outcomes = await asyncio.gather(
                self._ensure_broker(), self._ensure_postgres(), return_exceptions=True
            )
            _raise_failures(outcomes)
            if self._create_topics:
                created = await create_topics(
                    self.kafka_bootstrap,
                    REGISTRY,
                    prefix=self._topic_prefix,
                    timeout_s=self._timeout,
                )
                self._report(f"topics: {len(created)} created, {len(REGISTRY)} registered")
            if self._write_credentials:
                await self._ensure_credentials()
            if self._start_services:
                await self._ensure_services()
        return await self.status()

    async def _ensure_broker(self) -> None:
        if self._external_kafka:
            await wait_for_broker(self._external_kafka, timeout_s=self._timeout)
            self._report(f"broker: external at {self._external_kafka}")
            return
        log_file = self._home.log_file(BROKER)
        record = self._running(BROKER)
        if record is not None:
            await wait_for_broker(
                record.address, timeout_s=self._timeout, alive=_alive(record), log_file=log_file
            )
            self._report(f"broker: already running at {record.address} (pid {record.pid})")
            return
        address = f"{self._host}:{self._kafka_port}"
        if await tcp_port_open(self._host, self._kafka_port):
            raise StackError(
                f"broker: {address} is taken by another program; choose another port "
                "(--kafka-port) or point MAINSTAY_KAFKA_BOOTSTRAP at that broker"
            )
        argv = broker_command(tansu_binary(), self._host, self._kafka_port)
        record = await asyncio.to_thread(
            spawn,
            BROKER,
            argv,
            log_file=log_file,
            cwd=self._home.root,
            env=os.environ,
            address=address,
        )
        save_record(self._home.pid_file(BROKER), record)
        try:
            await wait_for_broker(
                address, timeout_s=self._timeout, alive=_alive(record), log_file=log_file
            )
        except Exception:
            await self._stop_recorded(BROKER)
            raise
        self._report(f"broker: started at {address} (pid {record.pid})")

    async def _ensure_postgres(self) -> None:
        if self._external_postgres:
            await wait_for_postgres(self._external_postgres, timeout_s=self._timeout)
            self._report(f"postgres: external at {redact_dsn(self._external_postgres)}")
            return
        load_embedded_postgres()  # here, not in the worker threads below
        pg = self._postgres()
        record = self._running(POSTGRES) or self._adopt_postmaster(pg)
        if record is not None:
            await wait_for_postgres(record.address, timeout_s=self._timeout, log_file=pg.log_file)
            self._report(f"postgres: already running at {record.address} (pid {record.pid})")
            return
        if await tcp_port_open(self._host, self._pg_port):
            raise StackError(
                f"postgres: {self._host}:{self._pg_port} is taken by another program; choose "
                "another port (--pg-port) or point MAINSTAY_POSTGRES_DSN at that server"
            )
        if await asyncio.to_thread(pg.initialise):
            self._report(f"postgres: initialised {pg.pgdata}")
        pid = await asyncio.to_thread(pg.start, self._timeout)
        record = pg.record(pid)
        if record is None:
            raise StackError(f"postgres: the server (pid {pid}) exited right after its start")
        save_record(self._home.pid_file(POSTGRES), record)
        try:
            await wait_for_postgres(
                pg.dsn,
                timeout_s=self._timeout,
                probe=(self._host, self._pg_port),
                log_file=pg.log_file,
            )
            await ensure_vector(pg.dsn, timeout_s=self._timeout)
        except Exception:
            await self._stop_postgres()
            raise
        self._report(f"postgres: started at {pg.dsn} (pid {pid})")

    def _adopt_postmaster(self, pg: EmbeddedPostgres) -> ProcessRecord | None:
        """Record a server running on our data directory without a record (e.g. the
        pids folder was deleted), so it is reused and ``down`` can stop it."""
        record = pg.running_server()
        if record is not None:
            save_record(self._home.pid_file(POSTGRES), record)
        return record

    async def _ensure_credentials(self) -> None:
        # Imported here: the auth package is heavy, and `status` does not need it.
        from mainstay_common.auth.devkeys import ensure_dev_secrets  # noqa: PLC0415

        secrets = await asyncio.to_thread(ensure_dev_secrets, self._home.root)
        for path in secrets.removed:
            self._report(
                f"credentials: removed {path.name} (the identity service signs tokens now)"
            )
        self._report(f"credentials: key files under {self._home.root}")

    async def _ensure_services(self) -> None:
        specs = discover_services(self._repo_root)
        identity = next((spec for spec in specs if spec.name == IDENTITY), None)
        port: int | None = None
        if identity is not None:
            port = self._resolved_identity_port()
            await self._ensure_identity(identity, port)
            if self._write_credentials:
                await self._bootstrap_admin_token(identity, port)
                await ensure_mail_credentials(
                    identity_base_url(port),
                    home=self._home.root,
                    admin_token=self._home.admin_token,
                    services=[spec.name for spec in specs],
                    report=self._report,
                    timeout_s=self._timeout,
                )
        elif self._write_credentials:
            self._report(f"credentials: no identity service in {self._repo_root}, no admin token")
        started: list[ProcessRecord] = []
        for spec in specs:
            if spec is identity:
                continue
            if self._running(spec.name) is not None:
                self._report(f"{spec.name}: already running")
                continue
            record = await self._spawn_service(spec, port, address="")
            started.append(record)
        if not started:
            return
        # A service that cannot even import dies at once; one that crashes later
        # shows up in `status` and its log.
        await asyncio.sleep(self._settle)
        failed = [record for record in started if live_process(record) is None]
        for record in started:
            if record not in failed:
                self._report(f"{record.name}: started (pid {record.pid})")
        if failed:
            lines: list[str] = []
            for record in failed:
                self._home.pid_file(record.name).unlink(missing_ok=True)
                log_file = self._home.log_file(record.name)
                lines += [f"{record.name} exited at start; last lines of {log_file}:"]
                lines += tail(log_file, 15)
            raise StackError("\n".join(lines))

    def _resolved_identity_port(self) -> int:
        if self._identity_port is not None:
            return self._identity_port
        return identity_port(os.environ)

    def _service_env(self, spec: ServiceSpec, port: int | None) -> dict[str, str]:
        return service_environment(
            spec,
            os.environ,
            home=self._home.root,
            kafka_bootstrap=self.kafka_bootstrap,
            postgres_dsn=self.postgres_dsn,
            topic_prefix=self._topic_prefix,
            identity_port=port,
            embedded_broker=not self._external_kafka,
        )

    async def _ensure_identity(self, spec: ServiceSpec, port: int) -> None:
        """Start the identity service unless it runs, and wait until it is ready."""
        url = identity_base_url(port)
        record = self._running(spec.name)
        if record is not None:
            await self._wait_ready(record, url)
            self._report(f"{spec.name}: already running at {url} (pid {record.pid})")
            return
        if await tcp_port_open("127.0.0.1", port):
            raise StackError(
                f"{spec.name}: 127.0.0.1:{port} is taken by another program; set "
                "IDENTITY_HTTP_PORT to a free port (the other services follow it)"
            )
        record = await self._spawn_service(spec, port, address=url)
        try:
            await self._wait_ready(record, url)
        except Exception:
            await self._stop_recorded(spec.name)
            raise
        self._report(f"{spec.name}: started at {url} (pid {record.pid})")

    async def _wait_ready(self, record: ProcessRecord, url: str) -> None:
        """Poll ``url/readyz`` until it answers 200, the process dies, or the timeout passes."""
        log_file = self._home.log_file(record.name)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        last = "no answer yet"
        # trust_env=False: a proxy from the environment must not sit in front of loopback.
        async with httpx.AsyncClient(timeout=2.0, trust_env=False) as client:
            while True:
                if live_process(record) is None:
                    lines = [f"{record.name} exited before it was ready; last lines of {log_file}:"]
                    raise StackError("\n".join(lines + tail(log_file, 15)))
                try:
                    answer = await client.get(f"{url}/readyz")
                except httpx.HTTPError as exc:
                    last = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                else:
                    if answer.status_code == 200:
                        return
                    last = f"/readyz answered {answer.status_code}: {answer.text[:200]}"
                if loop.time() >= deadline:
                    lines = [
                        f"{record.name} (pid {record.pid}) was not ready at {url}/readyz within"
                        f" {self._timeout:.0f}s ({last}); last lines of {log_file}:"
                    ]
                    raise StackError("\n".join(lines + tail(log_file, 15)))
                await asyncio.sleep(0.2)

    async def _bootstrap_admin_token(self, spec: ServiceSpec, port: int) -> None:
        """Have the identity service's bootstrap sign (or keep) ``<home>/admin.token``.

        It runs as its own process with the identity service's environment, so
        it reads the same database and key secret, and the stack never imports
        a service package.
        """
        argv = [
            sys.executable,
            "-m",
            f"{spec.module}.bootstrap",
            "admin-token",
            "--out",
            str(self._home.admin_token),
        ]
        process = await asyncio.create_subprocess_exec(
            *argv,
            cwd=self._repo_root,
            env=self._service_env(spec, port),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            output, _ = await within(process.communicate(), self._timeout)
        except BaseException as exc:
            if process.returncode is None:
                process.kill()
                await process.wait()
            if isinstance(exc, TimeoutError):
                raise StackError(
                    f"admin token: `python {' '.join(argv[1:])}` did not finish within"
                    f" {self._timeout:.0f}s"
                ) from None
            raise
        text = output.decode("utf-8", errors="replace").strip()
        if process.returncode != 0:
            raise StackError(
                f"admin token: `python {' '.join(argv[1:])}` failed (exit {process.returncode}):"
                f"\n{text}"
            )
        self._report(text.splitlines()[-1] if text else f"admin token: {self._home.admin_token}")

    async def _spawn_service(
        self, spec: ServiceSpec, port: int | None, *, address: str
    ) -> ProcessRecord:
        """Start one service process with its environment and record it."""
        record = await asyncio.to_thread(
            spawn,
            spec.name,
            spec.command(),
            log_file=self._home.log_file(spec.name),
            cwd=self._repo_root,
            env=self._service_env(spec, port),
            address=address,
        )
        save_record(self._home.pid_file(spec.name), record)
        return record

    async def kill(self, name: str) -> int | None:
        """SIGKILL the service ``name`` that ``up`` started, as a crash would, and wait
        until it is gone; its pid, or None when it was not running. ``up`` starts it again."""
        record = self._running(name)
        process = None if record is None else live_process(record)
        if record is None or process is None:
            return None
        process.kill()
        await asyncio.to_thread(process.wait, 10)
        self._home.pid_file(name).unlink(missing_ok=True)
        return record.pid

    def _running(self, name: str) -> ProcessRecord | None:
        """The record of ``name`` if its process still runs; a stale record is removed."""
        pid_file = self._home.pid_file(name)
        record = load_record(pid_file)
        if record is None:
            return None
        if live_process(record) is None:
            pid_file.unlink(missing_ok=True)
            self._report(f"{name}: removed the stale record of pid {record.pid}")
            return None
        return record

    # -- down ---------------------------------------------------------------

    async def down(self) -> list[str]:
        """Stop what ``up`` started (services, then the broker, then PostgreSQL).

        Returns the names of the components that were running and are now stopped.
        """
        async with self._home.locked():
            names = self._home.recorded_names()
            services = [name for name in names if name not in {BROKER, POSTGRES}]
            stopped = await asyncio.gather(*(self._stop_recorded(name) for name in services))
            result = [name for name, done in zip(services, stopped, strict=True) if done]
            if BROKER in names and await self._stop_recorded(BROKER):
                result.append(BROKER)
            if POSTGRES in names and await self._stop_postgres():
                result.append(POSTGRES)
        for name in result:
            self._report(f"{name}: stopped")
        return result

    async def _stop_recorded(self, name: str) -> bool:
        pid_file = self._home.pid_file(name)
        record = load_record(pid_file)
        if record is None:
            return False
        stopped = await asyncio.to_thread(stop_process, record, grace_s=self._grace)
        pid_file.unlink(missing_ok=True)
        return stopped

    async def _stop_postgres(self) -> bool:
        pid_file = self._home.pid_file(POSTGRES)
        record = load_record(pid_file)
        if record is None:
            return False
        if live_process(record) is None:
            pid_file.unlink(missing_ok=True)
            return False
        # The record proved the server on our data directory is the one we
        # started, so pg_ctl may stop it the way postgres wants to be stopped.
        load_embedded_postgres()
        await asyncio.to_thread(self._postgres().stop, self._grace + 20)
        # SIGINT is postgres's own "fast shutdown", should pg_ctl have failed.
        await asyncio.to_thread(
            stop_process, record, grace_s=self._grace, first_signal=signal.SIGINT
        )
        pid_file.unlink(missing_ok=True)
        return True

    # -- status -------------------------------------------------------------

    async def status(self) -> list[ComponentStatus]:
        """One row for the broker, PostgreSQL and every known service."""
        return await read_status(
            self._home,
            self._repo_root,
            external_kafka=self._external_kafka,
            external_postgres=self._external_postgres,
            kafka_bootstrap=self.kafka_bootstrap,
            postgres_dsn=self.postgres_dsn,
        )


def _alive(record: ProcessRecord) -> Callable[[], bool]:
    return lambda: live_process(record) is not None


def _raise_failures(outcomes: Sequence[object]) -> None:
    """Re-raise what concurrent starts raised: cancellation first, then every start error."""
    errors: list[Exception] = []
    for outcome in outcomes:
        if isinstance(outcome, BaseException) and not isinstance(outcome, Exception):
            raise outcome
        if isinstance(outcome, Exception):
            errors.append(outcome)
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise StackError("\n\n".join(str(error) for error in errors)) from errors[0]
