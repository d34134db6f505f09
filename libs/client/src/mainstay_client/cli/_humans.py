"""``mainstay inbox`` (identity), ``mainstay tools`` (tools gateway), ``mainstay spend``
(ledger)."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from mainstay_client._settings import ClientError
from mainstay_client.cli._core import (
    CliSettings,
    JsonOption,
    Service,
    fail,
    load_settings,
    out,
    run,
    segment,
    show,
)

__all__ = ["inbox", "spend", "tools"]

inbox = typer.Typer(help="Your inbox: list, read, reply, approve, deny.", no_args_is_help=True)
tools = typer.Typer(help="Tools: list, show, register, remove, call, audit.", no_args_is_help=True)
spend = typer.Typer(help="Spend: report, budgets.", no_args_is_help=True)

APPROVING = ("approve", "approved", "yes", "accept", "allow")
"""The options ``inbox approve`` picks by itself, first match first."""
DENYING = ("deny", "denied", "no", "reject", "abort")
"""The options ``inbox deny`` picks by itself, first match first."""


def _identity(settings: CliSettings) -> Service:
    return Service(settings, "identity service", settings.identity_url)


def _gateway(settings: CliSettings) -> Service:
    return Service(settings, "tools gateway", settings.tools_gateway_url)


def _ledger(settings: CliSettings) -> Service:
    return Service(settings, "ledger", settings.ledger_url)


# -- inbox -------------------------------------------------------------------------------


def _approval_cell(approval: dict[str, Any] | None) -> str:
    if not approval:
        return ""
    status = approval.get("status")
    if status == "pending":
        return f"pending ({'/'.join(approval.get('options') or [])})"
    decision = approval.get("decision") or ""
    if status == "decided":
        return f"{decision} by {approval.get('decided_by') or '?'}"
    return f"{status}: {decision}"


def _message_row(message: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": message.get("message_id"),
        "from": message.get("sender"),
        "subject": message.get("subject"),
        "kind": message.get("kind"),
        "read": "read" if message.get("read_at") else "unread",
        "approval": _approval_cell(message.get("approval")),
        "sent": message.get("sent_at"),
    }


@inbox.command("list")
def inbox_list(
    unread: Annotated[bool, typer.Option("--unread", help="Only unread messages.")] = False,
    label: Annotated[str | None, typer.Option(help="Only messages with this label.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="At most this many.")] = 50,
    as_json: JsonOption = False,
) -> None:
    """Your messages, newest first."""

    async def go() -> list[dict[str, Any]]:
        answer = await _identity(load_settings()).call(
            "GET", "/v1/inbox", params={"unread": unread, "label": label, "limit": limit}
        )
        return list(answer["messages"])

    messages = run(go())
    if as_json:
        show(messages, as_json=True)
        return
    show([_message_row(m) for m in messages], as_json=False, title="messages")


def _print_message(message: dict[str, Any]) -> None:
    fields = {
        "id": message.get("message_id"),
        "thread": message.get("thread_id"),
        "from": message.get("sender"),
        "to": ", ".join(message.get("to") or []),
        "subject": message.get("subject"),
        "kind": message.get("kind"),
        "sent": message.get("sent_at"),
    }
    for name, value in fields.items():
        out.print(f"[bold]{name}:[/bold] {escape(str(value or ''))}")
    out.print()
    out.print(escape(str(message.get("body") or "")))
    for attachment in message.get("attachments") or []:
        out.print(
            f"[dim]attachment:[/dim] {escape(str(attachment.get('name')))}"
            f" ({escape(str(attachment.get('content_type')))})"
        )
        out.print(escape(json.dumps(attachment.get("data"), indent=2, default=str)))
    answer = message.get("answer")
    if answer:
        out.print(
            f"[dim]answers approval[/dim] {escape(str(answer.get('approval_id')))}:"
            f" {escape(str(answer.get('decision')))}"
        )
    approval = message.get("approval")
    if approval:
        out.print()
        out.print(f"[bold]approval:[/bold] {escape(_approval_cell(approval))}")
        out.print(f"[bold]question:[/bold] {escape(str(approval.get('question') or ''))}")
        if approval.get("status") == "pending":
            ident = escape(str(approval.get("approval_id")))
            out.print(f"[bold]deadline:[/bold] {escape(str(approval.get('deadline') or ''))}")
            out.print(
                f"[dim]answer with: mainstay inbox approve {ident} [--option OPTION]"
                f" or mainstay inbox deny {ident}[/dim]"
            )
        elif approval.get("reason"):
            out.print(f"[bold]reason:[/bold] {escape(str(approval['reason']))}")


@inbox.command("read")
def inbox_read(
    message_id: Annotated[str, typer.Argument(help="The message's id.")],
    as_json: JsonOption = False,
) -> None:
    """Print a message of your inbox and mark it read."""

    async def go() -> dict[str, Any]:
        result: dict[str, Any] = await _identity(load_settings()).call(
            "POST", f"/v1/inbox/{segment(message_id)}/read"
        )
        return result

    message = run(go())
    if as_json:
        show(message, as_json=True)
        return
    _print_message(message)


@inbox.command("reply")
def inbox_reply(
    message_id: Annotated[str, typer.Argument(help="The message to answer.")],
    body: Annotated[str, typer.Option("--body", help="What to say.")],
    subject: Annotated[
        str | None, typer.Option(help="The subject (default: 'Re: ' and the original's).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Send a message back to the sender of a message of your inbox, in its thread (this
    marks the original read). Approvals are answered with approve or deny."""

    async def go() -> dict[str, Any]:
        identity = _identity(load_settings())
        original = await identity.call("POST", f"/v1/inbox/{segment(message_id)}/read")
        title = subject
        if title is None:
            earlier = str(original.get("subject") or "")
            title = earlier if earlier.lower().startswith("re:") else f"Re: {earlier}".strip()
        result: dict[str, Any] = await identity.call(
            "POST",
            "/v1/mail",
            json_body={
                "kind": "message",
                "to": [original["sender"]],
                "thread_id": original["thread_id"],
                "subject": title[:500],
                "body": body,
            },
        )
        return result

    sent = run(go())
    if as_json:
        show(sent, as_json=True)
        return
    out.print(
        f"sent {escape(str(sent.get('message_id')))} to {escape(', '.join(sent.get('to') or []))}"
    )


def _pick(approval: dict[str, Any], wanted: str | None, candidates: tuple[str, ...]) -> str:
    options = [str(o) for o in approval.get("options") or []]
    ident = approval.get("approval_id")
    if wanted is not None:
        if wanted not in options:
            raise ClientError(
                f"--option: '{wanted}' is not an option of approval '{ident}'"
                f" ({', '.join(options)})"
            )
        return wanted
    for candidate in candidates:
        if candidate in options:
            return candidate
    raise ClientError(
        f"approval '{ident}' has the options {', '.join(options)}:"
        " name one with `mainstay inbox approve ID --option OPTION`"
    )


def _decide(
    approval_id: str, option: str | None, reason: str, candidates: tuple[str, ...]
) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        identity = _identity(load_settings())
        path = f"/v1/approvals/{segment(approval_id)}"
        approval = await identity.call("GET", path)
        if approval.get("status") != "pending":
            raise ClientError(
                f"approval '{approval_id}' is {approval.get('status')} already:"
                f" {_approval_cell(approval)}"
            )
        decision = _pick(approval, option, candidates)
        result: dict[str, Any] = await identity.call(
            "POST", f"{path}/decision", json_body={"decision": decision, "reason": reason}
        )
        return result

    return run(go())


def _print_decided(answer: dict[str, Any], as_json: bool) -> None:
    if as_json:
        show(answer, as_json=True)
        return
    approval = answer.get("approval") or {}
    out.print(
        f"approval {escape(str(approval.get('approval_id')))}:"
        f" {escape(str(approval.get('decision')))}"
        f" (told {escape(str(approval.get('requester')))})"
    )


ReasonOption = Annotated[str, typer.Option("--reason", help="Why (sent to the requester).")]


@inbox.command("approve")
def inbox_approve(
    approval_id: Annotated[str, typer.Argument(help="The approval (its request's message id).")],
    option: Annotated[
        str | None,
        typer.Option(
            "--option",
            help="The option to choose (default: the approving one, e.g. 'approve'); needed"
            " for approvals such as retry/skip/abort.",
        ),
    ] = None,
    reason: ReasonOption = "",
    as_json: JsonOption = False,
) -> None:
    """Answer an approval that waits for you with its approving option (or --option)."""
    _print_decided(_decide(approval_id, option, reason, APPROVING), as_json)


@inbox.command("deny")
def inbox_deny(
    approval_id: Annotated[str, typer.Argument(help="The approval (its request's message id).")],
    reason: ReasonOption = "",
    as_json: JsonOption = False,
) -> None:
    """Answer an approval that waits for you with its denying option ('deny', or for a
    task's escalation 'abort')."""
    _print_decided(_decide(approval_id, None, reason, DENYING), as_json)


# -- tools -------------------------------------------------------------------------------


def _tool_row(tool: dict[str, Any]) -> dict[str, Any]:
    description = str(tool.get("description") or "")
    return {
        "name": tool.get("name"),
        "version": tool.get("version"),
        "kind": tool.get("kind"),
        "scope": tool.get("scope") or f"tools:call:{tool.get('name')}",
        "side effects": "yes" if tool.get("side_effects") else "no",
        "price (micros)": tool.get("price_micros"),
        "description": description if len(description) <= 60 else description[:59] + "…",
    }


@tools.command("list")
def tools_list(
    callable_only: Annotated[
        bool, typer.Option("--callable", help="Only the tools your token may call.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """The registered tools."""

    async def go() -> list[dict[str, Any]]:
        answer = await _gateway(load_settings()).call(
            "GET", "/v1/tools", params={"callable_only": callable_only}
        )
        return list(answer)

    found = run(go())
    if as_json:
        show(found, as_json=True)
        return
    show([_tool_row(t) for t in found], as_json=False, title="tools")


@tools.command("show")
def tools_show(
    name: Annotated[str, typer.Argument(help="The tool's name.")],
    as_json: JsonOption = False,
) -> None:
    """One tool's definition."""

    async def go() -> dict[str, Any]:
        result: dict[str, Any] = await _gateway(load_settings()).call(
            "GET", f"/v1/tools/{segment(name)}"
        )
        return result

    show(run(go()), as_json=as_json, title=name)


def _read_spec(source: str) -> dict[str, Any]:
    where = "stdin" if source == "-" else source
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"--file: cannot read {where}: {exc}")
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as exc:
        fail(f"--file: {where} is not valid JSON: {exc}")
    if not isinstance(spec, dict):
        fail(f"--file: {where} must hold a JSON object (the tool's definition)")
    return spec


@tools.command("register")
def tools_register(
    name: Annotated[str, typer.Argument(help="The tool's name.")],
    file: Annotated[
        str,
        typer.Option(
            "--file", "-f", help="The tool's definition (JSON; '-' reads stdin); needs tools:admin."
        ),
    ],
    as_json: JsonOption = False,
) -> None:
    """Register (or replace) a tool from its JSON definition; the definition's name
    defaults to NAME."""
    spec = _read_spec(file)
    spec.setdefault("name", name)

    async def go() -> dict[str, Any]:
        result: dict[str, Any] = await _gateway(load_settings()).call(
            "PUT", f"/v1/tools/{segment(name)}", json_body=spec
        )
        return result

    answer = run(go())
    if as_json:
        show(answer, as_json=True)
        return
    tool = answer.get("tool") or {}
    state = "registered" if answer.get("changed") else "unchanged"
    out.print(f"{state}: tool {escape(str(tool.get('name')))} version {tool.get('version')}")


@tools.command("remove")
def tools_remove(
    name: Annotated[str, typer.Argument(help="The tool's name.")],
    as_json: JsonOption = False,
) -> None:
    """Remove a tool from the registry (needs tools:admin)."""

    async def go() -> None:
        await _gateway(load_settings()).call("DELETE", f"/v1/tools/{segment(name)}")

    run(go())
    if as_json:
        show({"removed": name}, as_json=True)
        return
    out.print(f"removed: tool {escape(name)}")


def _parse_args(text: str) -> dict[str, Any]:
    try:
        arguments = json.loads(text)
    except json.JSONDecodeError as exc:
        fail(f"--args: not valid JSON: {exc}")
    if not isinstance(arguments, dict):
        fail(f"--args: must be a JSON object, not {type(arguments).__name__}")
    return arguments


def _call_failure(result: dict[str, Any]) -> str:
    text = f"{result.get('outcome')}: {result.get('message') or 'the call failed'}"
    problems = [
        f"{p.get('path') or '(arguments)'}: {p.get('message')}"
        for p in result.get("problems") or []
    ]
    if problems:
        text += f" ({'; '.join(problems)})"
    if result.get("suggestions"):
        text += f"; did you mean {', '.join(repr(s) for s in result['suggestions'])}?"
    if result.get("retry_after_s") is not None:
        text += f"; retry after {result['retry_after_s']:.1f}s"
    return text


@tools.command("call")
def tools_call(
    name: Annotated[str, typer.Argument(help="The tool's name.")],
    args: Annotated[
        str, typer.Option("--args", help="The arguments, a JSON object.", show_default=True)
    ] = "{}",
    idempotency_key: Annotated[
        str,
        typer.Option(
            "--idempotency-key", help="The same key again replays the first result of the call."
        ),
    ] = "",
    as_json: JsonOption = False,
) -> None:
    """Call a tool through the gateway and print the outcome and the output; exits 1 when
    the outcome is not OK."""
    arguments = _parse_args(args)

    async def go() -> dict[str, Any]:
        result: dict[str, Any] = await _gateway(load_settings()).call(
            "POST",
            f"/v1/tools/{segment(name)}/invoke",
            json_body={"arguments": arguments, "idempotency_key": idempotency_key},
        )
        return result

    result = run(go())
    ok = result.get("outcome") == "OK"
    if as_json:
        show(result, as_json=True)
    elif ok:
        replayed = " (replayed)" if result.get("replayed") else ""
        out.print(
            f"OK{replayed}: {escape(str(result.get('tool')))}"
            f" in {float(result.get('latency_ms') or 0):.0f} ms,"
            f" cost {result.get('cost_micros', 0)} micros, call {escape(str(result.get('call_id')))}"
        )
        out.print(escape(json.dumps(result.get("output"), indent=2, default=str)))
    if not ok:
        fail(_call_failure(result))


@tools.command("audit")
def tools_audit(
    tool: Annotated[str | None, typer.Option("--tool", help="Only calls of this tool.")] = None,
    agent: Annotated[
        str | None, typer.Option("--agent", help="Only calls by this principal.")
    ] = None,
    outcome: Annotated[
        str | None, typer.Option("--outcome", help="Only calls with this outcome (e.g. OK).")
    ] = None,
    task_id: Annotated[
        str | None, typer.Option("--task-id", help="Only calls of this task.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many.")] = 100,
    as_json: JsonOption = False,
) -> None:
    """Your tenant's tool calls, newest first (needs tools:audit)."""

    async def go() -> list[dict[str, Any]]:
        answer = await _gateway(load_settings()).call(
            "GET",
            "/v1/audit",
            params={
                "tool": tool,
                "agent": agent,
                "outcome": outcome,
                "task_id": task_id,
                "limit": limit,
            },
        )
        return list(answer["calls"])

    calls = run(go())
    if as_json:
        show(calls, as_json=True)
        return
    show(
        calls,
        as_json=False,
        columns=(
            "at",
            "tool",
            "principal",
            "outcome",
            "latency_ms",
            "cost_micros",
            "task_id",
            "idempotency_key",
            "channel",
            "message",
        ),
        title="tool calls",
    )


# -- spend -------------------------------------------------------------------------------


class Period(StrEnum):
    day = "day"
    week = "week"
    month = "month"


class Group(StrEnum):
    tenant = "tenant"
    team = "team"
    agent = "agent"
    task = "task"
    model = "model"
    tool = "tool"


def _period_start(period: Period, now: datetime) -> datetime:
    """The start (UTC) of the day, ISO week or month ``now`` is in."""
    day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period is Period.day:
        return day
    if period is Period.week:
        return day - timedelta(days=day.weekday())
    return day.replace(day=1)


def _money(micros: Any) -> str:
    if micros is None:
        return ""
    return f"{float(micros) / 1_000_000:,.6f}"


TenantOption = Annotated[
    str | None, typer.Option("--tenant", help="The tenant (default: your token's).")
]


@spend.command("report")
def spend_report(
    period: Annotated[
        Period | None,
        typer.Option(
            "--period",
            help="This day, ISO week or month so far (UTC); the ledger's default is the month.",
        ),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option("--since", help="From this moment (ISO 8601 with a time zone)."),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option("--until", help="Up to this moment (ISO 8601 with a time zone; default now)."),
    ] = None,
    group_by: Annotated[Group, typer.Option("--group-by", help="How to group the spend.")] = (
        Group.agent
    ),
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="At most this many groups.")] = 1000,
    tenant: TenantOption = None,
    as_json: JsonOption = False,
) -> None:
    """Spend in a window, grouped (largest first), and the cost per successful task of the
    tasks that ended in it. Amounts are in units of the currency (the ledger keeps micros)."""
    if period is not None and since is not None:
        fail("--period and --since: give one of them")
    start = since
    if period is not None:
        start = _period_start(period, datetime.now(UTC)).isoformat()

    async def go() -> dict[str, Any]:
        settings = load_settings()
        ledger = _ledger(settings)
        base = f"/v1/tenants/{segment(settings.tenant_or(tenant))}"
        window = {"since": start, "until": until}
        report, per_success = await asyncio.gather(
            ledger.call(
                "GET",
                f"{base}/spend",
                params={**window, "group_by": group_by.value, "limit": limit},
            ),
            ledger.call(
                "GET",
                f"{base}/cost-per-success",
                params=window,
                ok=lambda status: status < 300 or status == 404,
            ),
        )
        available = isinstance(per_success, dict) and "currencies" in per_success
        return {"spend": report, "cost_per_success": per_success if available else None}

    answer = run(go())
    if as_json:
        show(answer, as_json=True)
        return
    report = answer["spend"]
    window = f"{report.get('since')} to {report.get('until')}"
    show(
        [
            {
                group_by.value: row.get("key"),
                "currency": row.get("currency"),
                "spend": _money(row.get("spend")),
                "records": row.get("records"),
                "input tokens": row.get("input_tokens"),
                "output tokens": row.get("output_tokens"),
                "cached tokens": row.get("cached_tokens"),
                "calls": row.get("calls"),
            }
            for row in report.get("groups") or []
        ],
        as_json=False,
        title=f"spend of {report.get('tenant')} by {group_by.value}, {window}",
    )
    per_success = answer["cost_per_success"]
    if per_success is None:
        out.print("[dim]cost per successful task: not available from this ledger[/dim]")
        return
    show(
        [
            {
                "currency": row.get("currency"),
                "completed tasks": row.get("completed_tasks"),
                "completed spend": _money(row.get("completed_spend")),
                "per successful task": _money(row.get("cost_per_successful_task")),
                "failed tasks": row.get("failed_tasks"),
                "cancelled tasks": row.get("cancelled_tasks"),
                "wasted spend": _money(row.get("wasted_spend")),
            }
            for row in per_success.get("currencies") or []
        ],
        as_json=False,
        title="cost per successful task (tasks that ended in the window)",
    )


@spend.command("budgets")
def spend_budgets(tenant: TenantOption = None, as_json: JsonOption = False) -> None:
    """The tenant's budgets (limits in units of the currency)."""

    async def go() -> list[dict[str, Any]]:
        settings = load_settings()
        answer = await _ledger(settings).call(
            "GET", f"/v1/tenants/{segment(settings.tenant_or(tenant))}/budgets"
        )
        return list(answer["budgets"])

    budgets = run(go())
    if as_json:
        show(budgets, as_json=True)
        return
    show(
        [
            {
                "id": b.get("budget_id"),
                "scope": b.get("scope"),
                "name": b.get("name"),
                "period": b.get("period"),
                "currency": b.get("currency"),
                "soft limit": _money(b.get("soft_limit")),
                "hard limit": _money(b.get("hard_limit")),
                "updated": b.get("updated_at"),
            }
            for b in budgets
        ],
        as_json=False,
        title="budgets",
    )
