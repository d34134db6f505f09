"""Benchmark: the whole mesh under infrastructure faults, with what each lost and repeated.

Runs the three faults of :mod:`mainstay_execution.testing.faults` one after
another, each on a private embedded broker and PostgreSQL of its own (started
on free loopback ports, stopped and started again by the fault; the variables
``MAINSTAY_KAFKA_BOOTSTRAP`` / ``MAINSTAY_POSTGRES_DSN`` are not used, since a
fault must be able to stop the servers it runs on):

- ``postgres_restart``: PostgreSQL stopped for ``--down`` seconds under a stream
  of tasks (``--tasks`` before, as many submitted while it is away) and started
  again on the same port and data directory;
- ``broker_restart``: the broker stopped for ``--down`` seconds after a batch and
  started again, empty; an agent version is committed (to the supervisor's
  outbox) while it is away, and a second batch runs after its return;
- ``frozen_instance``: two execution processes; the one running most of a batch
  of ``--tasks`` tasks is frozen (``SIGSTOP``) until its partitions moved and its
  tasks resumed on the other, then woken (``SIGCONT``).

Every task calls two side-effecting, priced tools, so effects are counted where
they happen (the tool's own server, the ledger's usage rows, the task events).

Last line: one JSON object with each fault's figures (``sent``,
``acknowledged``, ``processed``, ``lost``, ``duplicated`` and details), whether
each fault did what it is meant to (``faults_exercised``), and the totals
``lost`` and ``duplicated`` (targets: 0 and 0).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from datetime import UTC, datetime
from typing import Any

from mainstay_execution.testing.faults import broker_restart, frozen_instance, postgres_restart


async def run(args: argparse.Namespace) -> dict[str, Any]:
    faults: dict[str, Any] = {}
    started = time.perf_counter()
    for name in args.only or ["postgres_restart", "broker_restart", "frozen_instance"]:
        began = time.perf_counter()
        if name == "postgres_restart":
            figures = await postgres_restart(
                tasks_before=args.tasks, tasks_during=args.tasks, down_s=args.down, wait_s=args.wait
            )
        elif name == "broker_restart":
            figures = await broker_restart(
                tasks_before=args.tasks, tasks_after=args.tasks, down_s=args.down, wait_s=args.wait
            )
        else:
            figures = await frozen_instance(tasks=args.tasks, wait_s=args.wait)
        faults[name] = {**figures.as_dict(), "seconds": round(time.perf_counter() - began, 1)}
        print(figures.line(), flush=True)
    return {
        "benchmark": "faults",
        "faults": faults,
        # Each fault did what it is meant to (services went not-ready and came back; the
        # outbox republished; the frozen instance's partitions moved and its tasks resumed).
        "faults_exercised": {name: _exercised(name, f) for name, f in faults.items()},
        "lost": sum(int(f["lost"]) for f in faults.values()),
        "duplicated": sum(int(f["duplicated"]) for f in faults.values()),
        "target_lost": 0,
        "target_duplicated": 0,
        "tasks_per_batch": args.tasks,
        "down_s": args.down,
        "seconds": round(time.perf_counter() - started, 1),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _exercised(name: str, figures: dict[str, Any]) -> bool:
    if name == "postgres_restart":
        return bool(figures["ready_again"]) and set(figures["not_ready_while_down"]) == set(
            figures["services"]
        )
    if name == "broker_restart":
        return bool(figures["outbox_republished_after_restart"])
    return bool(figures["partitions_moved"]) and bool(figures["tasks_resumed_elsewhere"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--tasks", type=int, default=12, help="tasks of each batch")
    parser.add_argument(
        "--down", type=float, default=8.0, help="seconds PostgreSQL or the broker stays down"
    )
    parser.add_argument("--wait", type=float, default=300, help="longest wait for a batch to end")
    parser.add_argument(
        "--only",
        action="append",
        choices=["postgres_restart", "broker_restart", "frozen_instance"],
        help="run only this fault (repeatable)",
    )
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
