"""Where a benchmark's CPU goes: CPU time of this process and every process it started.

Read from Linux's ``/proc`` (a process's ``stat`` counts all its threads); on
another system the figures are empty. Broker and PostgreSQL processes count
wherever they run, so nothing else should use them during a benchmark. Processes are grouped by what they are —
the broker, PostgreSQL (the server and all its backends), each service started
as its own process, and this process (whatever the benchmark runs in it) — so a
level's figures say which part was busiest, in percent of one core.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

__all__ = ["CpuMeter"]

_PROC = Path("/proc")
_TICK_S = 1 / os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 0.01
_SERVERS = frozenset({"postgres", "tansu"})
"""Counted wherever they run: PostgreSQL's server detaches from whoever started it."""
_SERVICES = (
    "mainstay_execution",
    "mainstay_tools_gateway",
    "mainstay_identity",
    "mainstay_ledger",
    "mainstay_memory",
    "mainstay_supervisor",
)


class CpuMeter:
    """CPU percent (of one core) per part, between one :meth:`mark` and the next."""

    def __init__(self, this_process: str = "bench process") -> None:
        self._this = this_process
        self._root = os.getpid()
        self._last = self._sample()
        self._last_at = time.monotonic()

    def mark(self) -> dict[str, float]:
        """The CPU each part used since the previous mark, in percent of one core.

        A process that ended in between is missing from both ends (its time is lost);
        one that started counts from zero.
        """
        now, at = self._sample(), time.monotonic()
        wall = max(at - self._last_at, 1e-9)
        used: dict[str, float] = {}
        for pid, (part, seconds) in now.items():
            before = self._last.get(pid)
            spent = seconds - before[1] if before is not None else seconds
            used[part] = used.get(part, 0.0) + max(spent, 0.0)
        self._last, self._last_at = now, at
        return {part: round(100 * s / wall, 1) for part, s in sorted(used.items())}

    def _sample(self) -> dict[int, tuple[str, float]]:
        """Every process of the tree under this one: its part and CPU seconds so far."""
        if not _PROC.is_dir():
            return {}
        parents: dict[int, int] = {}
        seconds: dict[int, float] = {}
        servers: set[int] = set()
        for entry in _PROC.iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue  # ended meanwhile
            # The command name is in parentheses and may hold spaces: split after it.
            fields = stat[stat.rindex(")") + 2 :].split()
            pid = int(entry.name)
            if stat[stat.index("(") + 1 : stat.rindex(")")] in _SERVERS:
                servers.add(pid)
            parents[pid] = int(fields[1])
            seconds[pid] = (int(fields[11]) + int(fields[12])) * _TICK_S
        tree = {self._root}
        grew = True
        while grew:
            grew = False
            for pid, parent in parents.items():
                if parent in tree and pid not in tree:
                    tree.add(pid)
                    grew = True
        return {pid: (self._part(pid), seconds[pid]) for pid in tree | servers if pid in seconds}

    def _part(self, pid: int) -> str:
        if pid == self._root:
            return self._this
        try:
            command = (_PROC / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            return "other"
        for service in _SERVICES:
            if service in command:
                return service.removeprefix("mainstay_").replace("_", "-")
        if "tansu" in command:
            return "broker"
        if "postgres" in command:
            return "postgresql"
        return "other"
