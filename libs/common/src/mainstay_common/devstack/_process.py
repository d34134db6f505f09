"""Processes the stack starts, the records that identify them, and how they stop.

A pid alone cannot tell our broker from an unrelated program that was given
the same pid after ours died, so every record also keeps the process's start
time; a process is ours only when both match. ``down`` signals nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil  # type: ignore[import-untyped]  # no types-psutil in the dev group yet

from mainstay_common.devstack._home import StackError
from mainstay_common.lifecycle import within

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = [
    "ProcessRecord",
    "free_port",
    "live_process",
    "load_record",
    "save_record",
    "spawn",
    "stop_process",
    "tail",
    "tcp_port_open",
]

# Two reads of one process's start time agree exactly; the tolerance only absorbs
# float formatting through JSON. A reused pid starts at least a clock tick later.
_START_TIME_TOLERANCE_S = 0.005


@dataclass(frozen=True)
class ProcessRecord:
    """What ``<home>/pids/<name>.pid`` holds about one started process."""

    name: str
    pid: int
    create_time: float
    address: str
    command: tuple[str, ...] = ()

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> ProcessRecord:
        raw: dict[str, Any] = json.loads(text)
        return cls(
            name=str(raw["name"]),
            pid=int(raw["pid"]),
            create_time=float(raw["create_time"]),
            address=str(raw["address"]),
            command=tuple(str(part) for part in raw.get("command", ())),
        )


def save_record(path: Path, record: ProcessRecord) -> None:
    """Write ``record`` atomically, so a crash never leaves half a record."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".tmp")
    partial.write_text(record.to_json(), encoding="utf-8")
    partial.replace(path)


def load_record(path: Path) -> ProcessRecord | None:
    """The record at ``path``; ``None`` when missing or unreadable (such a file is removed)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        return ProcessRecord.from_json(text)
    except (ValueError, KeyError, TypeError):
        path.unlink(missing_ok=True)
        return None


def live_process(record: ProcessRecord) -> psutil.Process | None:
    """The running process ``record`` describes, or ``None`` if it is gone or the pid was reused."""
    try:
        process = psutil.Process(record.pid)
        if abs(process.create_time() - record.create_time) > _START_TIME_TOLERANCE_S:
            return None
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    return process


def spawn(
    name: str,
    argv: Sequence[str],
    *,
    log_file: Path,
    cwd: Path,
    env: Mapping[str, str],
    address: str,
) -> ProcessRecord:
    """Start ``argv`` detached from this process, appending its output to ``log_file``.

    The child gets its own session, so it outlives the CLI that started it and a
    Ctrl-C in that terminal does not reach it.
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        try:
            child = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=dict(env),
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            raise StackError(f"cannot start {name}: {exc}") from exc
    # Read the start time before anything can reap the child: even if it has
    # already exited it is still a zombie here, so the read cannot fail.
    create_time = psutil.Process(child.pid).create_time()
    # While this process lives it is the child's parent; a thread that waits for
    # the child reaps it as soon as it exits (no zombie that looks alive) and
    # keeps the Popen object referenced, so it is never collected while running.
    threading.Thread(target=child.wait, name=f"reap-{name}", daemon=True).start()
    return ProcessRecord(
        name=name, pid=child.pid, create_time=create_time, address=address, command=tuple(argv)
    )


def _signal(record: ProcessRecord, sig: signal.Signals) -> None:
    """Send ``sig`` to the process and, when it leads its own group, to the whole group."""
    with contextlib.suppress(ProcessLookupError):  # it exited meanwhile: nothing to do
        if os.getpgid(record.pid) == record.pid:
            os.killpg(record.pid, sig)
        else:
            os.kill(record.pid, sig)


def _wait_gone(record: ProcessRecord, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while live_process(record) is not None:
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def stop_process(
    record: ProcessRecord, *, grace_s: float = 10.0, first_signal: signal.Signals = signal.SIGTERM
) -> bool:
    """Stop the process of ``record`` if it is still ours; ``True`` when one was stopped.

    Blocking: call it through ``asyncio.to_thread`` from a coroutine.
    """
    if live_process(record) is None:
        return False
    _signal(record, first_signal)
    if _wait_gone(record, grace_s):
        return True
    # The identity is checked again: the process may have exited during the grace.
    if live_process(record) is not None:
        _signal(record, signal.SIGKILL)
        if not _wait_gone(record, 5.0):
            raise StackError(f"{record.name} (pid {record.pid}) did not exit after SIGKILL")
    return True


def tail(path: Path, lines: int = 20) -> list[str]:
    """The last ``lines`` lines of ``path`` (empty when the file does not exist)."""
    if lines <= 0:
        return []
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            chunk = min(size, max(64 * 1024, lines * 512))
            handle.seek(size - chunk)
            data = handle.read()
    except FileNotFoundError:
        return []
    text = data.decode("utf-8", errors="replace").splitlines()
    if chunk < size and text:
        text = text[1:]  # the first line of the chunk is probably cut
    return text[-lines:]


async def tcp_port_open(host: str, port: int, timeout_s: float = 1.0) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        _, writer = await within(asyncio.open_connection(host, port), timeout_s)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


_EPHEMERAL_RANGE_FILE = "/proc/sys/net/ipv4/ip_local_port_range"


def restartable_port(host: str = "127.0.0.1") -> int:
    """A free TCP port outside the system's ephemeral range, for a server that is
    stopped and started again on the same port.

    A port the OS picks (:func:`free_port`) is an ephemeral one: while its server is
    down, any outgoing connection may take it as its local port, and the server then
    cannot listen on it again ("Address already in use"). Falls back to
    :func:`free_port` where the range is not known.
    """
    try:
        low, high = map(int, Path(_EPHEMERAL_RANGE_FILE).read_text().split())
    except (OSError, ValueError):
        return free_port(host)
    candidates: list[int] = [
        *range(10_000, min(low, 65_536)),
        *range(max(high + 1, 10_000), 65_536),
    ]
    for port in random.sample(candidates, min(len(candidates), 200)):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
    return free_port(host)
