"""``mainstay agents``, ``mainstay dlq`` and ``mainstay fleet``: the supervisor's HTTP API.

``agents`` reads and registers agent definitions in a tenant (``supervisor:read``,
``supervisor:admin``); ``dlq`` triages the mesh's dead letters (``supervisor:dlq:read``
or ``supervisor:dlq:admin``, each with ``*``: a DLQ mixes every tenant's messages);
``fleet`` shows the instances, consumer groups, lag and scaling signals.
"""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from mainstay_client.cli._core import (
    JsonOption,
    fail,
    out,
    run,
    segment,
    show,
    supervisor_api,
)

__all__ = ["agents", "dlq", "fleet"]

agents = typer.Typer(help="Agents: register, list, show.", no_args_is_help=True)
dlq = typer.Typer(help="Dead letters: list, show, replay, purge.", no_args_is_help=True)
fleet = typer.Typer(help="The fleet: instances, groups, lag.", no_args_is_help=True)


class LetterStatus(StrEnum):
    """Which letters a listing shows."""

    PENDING = "pending"
    REPLAYED = "replayed"
    PURGED = "purged"
    ALL = "all"


TenantOption = Annotated[
    str | None, typer.Option("--tenant", help="The tenant (default: the token's).")
]
TopicArgument = Annotated[
    str, typer.Argument(metavar="TOPIC", help="The DLQ topic, as `mainstay dlq list` names it.")
]
PartitionOption = Annotated[
    int | None, typer.Option("--partition", min=0, help="The letter's partition.")
]


OffsetOption = Annotated[int | None, typer.Option("--offset", min=0, help="The letter's offset.")]


# -- agents ------------------------------------------------------------------------------


@agents.command("register")
def register_agent(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The agent's name.")],
    file: Annotated[
        str,
        typer.Option(
            "--file",
            "-f",
            metavar="PATH",
            help="The agent's definition as a JSON object ('-' reads standard input).",
        ),
    ],
    tenant: TenantOption = None,
    as_json: JsonOption = False,
) -> None:
    """Register the next version of an agent from a JSON definition; prints the stored
    record (a definition equal to the latest version changes nothing)."""
    definition = _read_definition(file)

    async def go() -> None:
        settings, supervisor = supervisor_api()
        record = await supervisor.call(
            "PUT",
            f"/v1/tenants/{segment(settings.tenant_or(tenant))}/agents/{segment(name)}",
            json_body=definition,
        )
        if as_json:
            show(record, as_json=True)
            return
        show(_agent_fields(record), as_json=False, title=f"agent {record.get('name', name)}")

    run(go())


@agents.command("list")
def list_agents(tenant: TenantOption = None, as_json: JsonOption = False) -> None:
    """The tenant's agents, each at its latest version."""

    async def go() -> None:
        settings, supervisor = supervisor_api()
        answer = await supervisor.call(
            "GET", f"/v1/tenants/{segment(settings.tenant_or(tenant))}/agents"
        )
        if as_json:
            show(answer, as_json=True)
            return
        show(
            [_agent_row(record) for record in answer["agents"]],
            as_json=False,
            columns=[
                "name",
                "version",
                "state",
                "models",
                "tools",
                "registered_by",
                "registered_at",
            ],
            title="agents",
        )

    run(go())


@agents.command("show")
def show_agent(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The agent's name.")],
    version: Annotated[
        int | None, typer.Option("--version", min=1, help="This version (default: the latest).")
    ] = None,
    tenant: TenantOption = None,
    as_json: JsonOption = False,
) -> None:
    """One agent: its state and its definition, at its latest version or at --version."""

    async def go() -> None:
        settings, supervisor = supervisor_api()
        path = f"/v1/tenants/{segment(settings.tenant_or(tenant))}/agents/{segment(name)}"
        record = await supervisor.call(
            "GET", path if version is None else f"{path}/versions/{version}"
        )
        if as_json:
            show(record, as_json=True)
            return
        show(_agent_fields(record), as_json=False, title=f"agent {record.get('name', name)}")

    run(go())


_JSON_KINDS: dict[type, str] = {
    list: "an array",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "a boolean",
    type(None): "null",
}


def _read_definition(file: str) -> dict[str, Any]:
    """The JSON object in ``file`` (``-``: standard input); every problem names the file."""
    label = "standard input" if file == "-" else file
    try:
        text = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
    except OSError as exc:
        fail(f"cannot read {label}: {exc.strerror or exc}")
    except UnicodeDecodeError as exc:
        fail(f"{label}: not UTF-8 text: {exc.reason} at byte {exc.start}")
    try:
        document = json.loads(text)
    except ValueError as exc:
        fail(f"{label}: not valid JSON: {exc}")
    if not isinstance(document, dict):
        kind = _JSON_KINDS.get(type(document), type(document).__name__)
        fail(f"{label}: must be a JSON object of the agent's fields, not {kind}")
    return document


def _state(record: dict[str, Any]) -> str:
    if record.get("quarantined"):
        reason = record.get("quarantine_reason") or ""
        return f"quarantined: {reason}" if reason else "quarantined"
    return "active"


def _models(definition: dict[str, Any]) -> str:
    return ", ".join(
        f"{model.get('provider', '?')}/{model.get('model', '?')}"
        for model in definition.get("models") or []
    )


def _agent_row(record: dict[str, Any]) -> dict[str, Any]:
    definition = record.get("definition") or {}
    return {
        "name": record.get("name"),
        "version": record.get("version"),
        "state": _state(record),
        "models": _models(definition),
        "tools": ", ".join(definition.get("tools") or []),
        "registered_by": record.get("registered_by"),
        "registered_at": record.get("registered_at"),
    }


def _agent_fields(record: dict[str, Any]) -> dict[str, Any]:
    """A record as field/value pairs: who and which version, then the definition."""
    definition = dict(record.get("definition") or {})
    fields: dict[str, Any] = {
        "name": record.get("name"),
        "tenant": record.get("tenant"),
        "version": record.get("version"),
        "latest_version": record.get("latest_version"),
        "state": _state(record),
        "registered_by": record.get("registered_by"),
        "registered_at": record.get("registered_at"),
        "models": _models(definition),
    }
    for key in ("name", "tenant", "models"):
        definition.pop(key, None)
    fields.update(definition)
    return fields


# -- dead letters ------------------------------------------------------------------------


@dlq.command("list")
def list_dlqs(as_json: JsonOption = False) -> None:
    """Every DLQ of the mesh with its letters: total, pending, replayed, purged."""

    async def go() -> None:
        _, supervisor = supervisor_api()
        answer = await supervisor.call("GET", "/v1/dlq")
        if as_json:
            show(answer, as_json=True)
            return
        show(
            answer["dlqs"],
            as_json=False,
            columns=["topic", "group", "partitions", "total", "pending", "replayed", "purged"],
            title="dead-letter queues",
        )

    run(go())


@dlq.command("show")
def show_letters(
    topic: TopicArgument,
    partition: PartitionOption = None,
    offset: OffsetOption = None,
    status: Annotated[
        LetterStatus, typer.Option(help="Which letters: pending, replayed, purged or all.")
    ] = LetterStatus.PENDING,
    limit: Annotated[int, typer.Option(min=1, max=500, help="Letters per page.")] = 50,
    after: Annotated[
        str | None, typer.Option(help="The next page: the cursor a listing ends with.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """The letters of a DLQ (pending ones by default), or with --partition and --offset one
    letter in full: payload, headers, error, origin and what was done to it."""
    letter = _letter(partition, offset)

    async def go() -> None:
        _, supervisor = supervisor_api()
        base = f"/v1/dlq/{segment(topic)}"
        if letter is not None:
            detail = await supervisor.call("GET", f"{base}/letters/{letter[0]}/{letter[1]}")
            if as_json:
                show(detail, as_json=True)
                return
            show(detail, as_json=False, title=f"{topic} {letter[0]}:{letter[1]}")
            return
        answer = await supervisor.call(
            "GET",
            f"{base}/letters",
            params={"status": status.value, "limit": limit, "after": after},
        )
        if as_json:
            show(answer, as_json=True)
            return
        show(
            [_letter_row(summary) for summary in answer["letters"]],
            as_json=False,
            columns=[
                "partition",
                "offset",
                "status",
                "ce_type",
                "tenant",
                "error",
                "attempts",
                "failed_at",
                "origin_topic",
            ],
            title=f"{status.value} letters of {topic}",
        )
        if answer.get("next"):
            out.print(f"[dim]more: --after {escape(str(answer['next']))}[/dim]")

    run(go())


@dlq.command("replay")
def replay(
    topic: TopicArgument,
    partition: PartitionOption = None,
    offset: OffsetOption = None,
    every: Annotated[
        bool, typer.Option("--all", help="Replay every pending letter of the DLQ.")
    ] = False,
    reason: Annotated[str, typer.Option(help="A note for the audit.")] = "",
    as_json: JsonOption = False,
) -> None:
    """Send a letter (or with --all every pending one) back to its origin topic, for the
    consumer group that failed it only."""
    path = _action_path(topic, "replay", _letter(partition, offset), every=every)

    async def go() -> None:
        _, supervisor = supervisor_api()
        answer = await supervisor.call("POST", path, json_body={"reason": reason})
        show(answer, as_json=as_json, title="replayed")

    run(go())


@dlq.command("purge")
def purge(
    topic: TopicArgument,
    partition: PartitionOption = None,
    offset: OffsetOption = None,
    every: Annotated[
        bool, typer.Option("--all", help="Purge every pending letter of the DLQ.")
    ] = False,
    reason: Annotated[
        str, typer.Option(help="Why the letters are dropped (required: the audit says it).")
    ] = "",
    yes: Annotated[
        bool, typer.Option("--yes", help="Confirm: purged letters stay purged.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Drop a letter (or with --all every pending one) from triage: it is no longer pending
    and can never be replayed. Needs --reason and --yes."""
    path = _action_path(topic, "purge", _letter(partition, offset), every=every)
    if not yes:
        fail("purged letters can never be replayed; add --yes to purge them")
    if not reason.strip():
        fail("purging needs --reason: the audit records why letters were dropped")

    async def go() -> None:
        _, supervisor = supervisor_api()
        answer = await supervisor.call("POST", path, json_body={"reason": reason})
        show(answer, as_json=as_json, title="purged")

    run(go())


def _letter(partition: int | None, offset: int | None) -> tuple[int, int] | None:
    """The letter that --partition and --offset name, if they do (both or neither)."""
    if partition is None and offset is None:
        return None
    if partition is None or offset is None:
        fail("--partition and --offset name a letter together: give both")
    return partition, offset


def _action_path(topic: str, action: str, letter: tuple[int, int] | None, *, every: bool) -> str:
    if letter is not None and every:
        fail(f"either name a letter (--partition, --offset) or {action} --all, not both")
    if letter is not None:
        return f"/v1/dlq/{segment(topic)}/letters/{letter[0]}/{letter[1]}/{action}"
    if not every:
        fail(f"name the letter to {action} with --partition and --offset, or {action} --all")
    return f"/v1/dlq/{segment(topic)}/{action}"


def _letter_row(summary: dict[str, Any]) -> dict[str, Any]:
    error = summary.get("error") or {}
    kind = error.get("type") or error.get("class") or ""
    message = error.get("message") or ""
    return {**summary, "error": f"{kind}: {message}" if kind and message else kind or message}


# -- fleet -------------------------------------------------------------------------------


@fleet.command("status")
def status(as_json: JsonOption = False) -> None:
    """The fleet: every service instance and its liveness, each consumer group's lag and
    rates, the DLQs holding messages, and the replicas recommended per service."""

    async def go() -> None:
        _, supervisor = supervisor_api()
        view = await supervisor.call("GET", "/fleet")
        if as_json:
            show(view, as_json=True)
            return
        show(
            view.get("instances") or [],
            as_json=False,
            columns=[
                "service",
                "instance",
                "status",
                "stalled",
                "in_flight",
                "last_heartbeat",
                "last_progress_at",
                "version",
            ],
            title="instances",
        )
        show(
            [_rates(group) for group in view.get("groups") or []],
            as_json=False,
            columns=["group", "service", "lag", "consume_rate", "arrival_rate", "partitions"],
            title="consumer groups",
        )
        dead_letters = view.get("dead_letters") or {}
        show(
            [
                {"topic": topic, "messages": count}
                for topic, count in dead_letters.items()
                if count  # the empty DLQs: `mainstay dlq list` shows every one
            ],
            as_json=False,
            columns=["topic", "messages"],
            title="dead letters",
        )
        show(
            [_rates(row) for row in view.get("scaling") or []],
            as_json=False,
            columns=["service", "replicas", "recommended", "lag", "consume_rate", "arrival_rate"],
            title="scaling",
        )

    run(go())


def _rates(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` with its rates (messages per second) rounded for reading."""
    return {
        **row,
        **{
            name: f"{row[name]:.2f}/s"
            for name in ("consume_rate", "arrival_rate")
            if isinstance(row.get(name), int | float)
        },
    }
