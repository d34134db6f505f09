"""The development stack's home folder: where its data, logs and pid records live.

Layout under the home (``./.mainstay`` or ``$MAINSTAY_HOME``)::

    pg/             PostgreSQL data directory (its log is pg/server.log)
    logs/<name>.log one log per process the stack started (broker, each service)
    pids/<name>.pid one record per process the stack started, see ``_process``
    .lock           held while ``up`` or ``down`` changes the stack
    admin.token     an operator token (all scopes) signed by the identity service
    identity.key    what encrypts the identity service's signing keys at rest
    vault.key       what encrypts the tools gateway's credential vault
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping

__all__ = ["BROKER", "HOME_ENV", "POSTGRES", "StackError", "StackHome", "resolve_home"]

HOME_ENV = "MAINSTAY_HOME"
BROKER = "broker"
"""Component name of the broker the stack starts."""
POSTGRES = "postgres"
"""Component name of the embedded PostgreSQL; its log lives in the data directory."""


class StackError(RuntimeError):
    """A component of the development stack could not be started, reached or stopped.

    Deliberately outside the ``MainstayError`` tree: that tree tells the bus and
    the RPC layers how to treat a failed request, while this error only ever
    reaches a developer's terminal or a test session.
    """


def resolve_home(cwd: Path | None = None, environ: Mapping[str, str] | None = None) -> Path:
    """``$MAINSTAY_HOME`` when set, else ``.mainstay`` under ``cwd`` (default: the current directory)."""
    env = os.environ if environ is None else environ
    explicit = env.get(HOME_ENV)
    if explicit:
        return Path(explicit).expanduser().resolve()
    return ((cwd or Path.cwd()) / ".mainstay").resolve()


@dataclass(frozen=True)
class StackHome:
    """Paths inside one home folder."""

    root: Path

    @property
    def pgdata(self) -> Path:
        return self.root / "pg"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def pids(self) -> Path:
        return self.root / "pids"

    @property
    def lock_file(self) -> Path:
        return self.root / ".lock"

    @property
    def admin_token(self) -> Path:
        return self.root / "admin.token"

    def log_file(self, name: str) -> Path:
        if name == POSTGRES:
            # postgres writes its own log and, as root, runs as another user that
            # owns the data directory, so the log lives where that user may write.
            return self.pgdata / "server.log"
        return self.logs / f"{name}.log"

    def pid_file(self, name: str) -> Path:
        return self.pids / f"{name}.pid"

    def recorded_names(self) -> list[str]:
        """Names of every component with a pid record, sorted."""
        if not self.pids.is_dir():
            return []
        return sorted(path.stem for path in self.pids.glob("*.pid"))

    def prepare(self) -> None:
        """Create the home and its folders; keep the home out of git wherever it is."""
        for folder in (self.root, self.logs, self.pids):
            folder.mkdir(parents=True, exist_ok=True)
        ignore = self.root / ".gitignore"
        if not ignore.exists():
            ignore.write_text("*\n", encoding="utf-8")

    @contextlib.asynccontextmanager
    async def locked(self, timeout_s: float = 120.0) -> AsyncIterator[None]:
        """Hold the home's lock, so two ``up``/``down`` never interleave."""
        self.prepare()
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout_s
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if loop.time() >= deadline:
                        raise StackError(
                            f"another `up` or `down` has held {self.lock_file} for {timeout_s:.0f}s"
                        ) from None
                    await asyncio.sleep(0.1)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock
