"""What ``status`` reports: one row per component, from the pid records and a live probe."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from mainstay_common.db import redact_dsn
from mainstay_common.devstack._broker import broker_answers
from mainstay_common.devstack._home import BROKER, POSTGRES
from mainstay_common.devstack._postgres import postgres_answers
from mainstay_common.devstack._process import live_process, load_record
from mainstay_common.devstack._services import discover_services

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from pathlib import Path

    from mainstay_common.devstack._home import StackHome

__all__ = ["ComponentKind", "ComponentState", "ComponentStatus", "read_status"]

ComponentKind = Literal["broker", "postgres", "service"]
ComponentState = Literal["up", "down", "external"]


@dataclass(frozen=True)
class ComponentStatus:
    """One row of ``status``: a component, whether it runs, and where.

    A broker or PostgreSQL is ``up`` only when its recorded process is ours and
    it answers; a service is ``up`` while its recorded process runs.
    """

    name: str
    kind: ComponentKind
    state: ComponentState
    address: str = ""
    pid: int | None = None


async def read_status(
    home: StackHome,
    repo_root: Path,
    *,
    external_kafka: str | None,
    external_postgres: str | None,
    kafka_bootstrap: str,
    postgres_dsn: str,
) -> list[ComponentStatus]:
    """Rows for the broker, PostgreSQL and every service found or recorded, in that order.

    ``kafka_bootstrap`` / ``postgres_dsn`` are shown for an embedded component
    that does not run.
    """
    broker, postgres = await asyncio.gather(
        _server_status(
            home,
            BROKER,
            "broker",
            external=external_kafka,
            default=kafka_bootstrap,
            answers=broker_answers,
        ),
        _server_status(
            home,
            POSTGRES,
            "postgres",
            external=external_postgres,
            default=postgres_dsn,
            answers=postgres_answers,
        ),
    )
    rows = [broker, postgres]
    names = {spec.name for spec in discover_services(repo_root)}
    names |= {name for name in home.recorded_names() if name not in {BROKER, POSTGRES}}
    for name in sorted(names):
        record = load_record(home.pid_file(name))
        if record is not None and live_process(record) is not None:
            rows.append(ComponentStatus(name, "service", "up", record.address, record.pid))
        else:
            rows.append(ComponentStatus(name, "service", "down"))
    return rows


async def _server_status(
    home: StackHome,
    name: str,
    kind: ComponentKind,
    *,
    external: str | None,
    default: str,
    answers: Callable[[str], Awaitable[bool]],
) -> ComponentStatus:
    if external:
        return ComponentStatus(name, kind, "external", redact_dsn(external))
    record = load_record(home.pid_file(name))
    if record is None or live_process(record) is None:
        return ComponentStatus(name, kind, "down", default)
    state: ComponentState = "up" if await answers(record.address) else "down"
    return ComponentStatus(name, kind, state, record.address, record.pid)
