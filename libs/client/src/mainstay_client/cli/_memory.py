"""``mainstay memory``: remember, recall, history and forget an agent's memories (gRPC)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, cast

import typer

from mainstay_client.cli._core import JsonOption, load_settings, run, show

if TYPE_CHECKING:
    from mainstay_client._memory import Kind, Memory, MemoryClient

__all__ = ["commands"]

commands = typer.Typer(
    help="An agent's memory: remember, recall, history, forget.", no_args_is_help=True
)

KINDS = ("fact", "preference", "decision", "episode", "observation")
"""The memory kinds (``mainstay_client._memory.Kind``; a test keeps the two equal)."""


def _client() -> MemoryClient:
    from mainstay_client._memory import MemoryClient  # noqa: PLC0415 - gRPC only when used

    return MemoryClient(load_settings())


AgentOption = Annotated[str, typer.Option("--agent", "-a", help="Whose memory.")]
KindOption = Annotated[
    list[str] | None, typer.Option("--kind", help=f"One of {', '.join(KINDS)} (repeatable).")
]


@commands.command()
def remember(
    content: Annotated[str, typer.Argument(help="What to remember.")],
    agent: AgentOption,
    kind: Annotated[str, typer.Option(help=f"One of {', '.join(KINDS)}.")] = "fact",
    subject: Annotated[
        str, typer.Option(help="A stable key: a new fact on it supersedes the old one.")
    ] = "",
    importance: Annotated[float | None, typer.Option(min=0.0, max=1.0)] = None,
    as_json: JsonOption = False,
) -> None:
    """Store a memory (curated by the service: merged, superseding or a duplicate)."""

    async def go() -> None:
        async with _client() as memory:
            result = await memory.remember(
                content, agent=agent, kind=_kind(kind), subject=subject, importance=importance
            )
        show(
            {
                "id": result.memory.id,
                "outcome": result.outcome,
                "superseded": ", ".join(result.superseded_ids),
            },
            as_json=as_json,
        )

    run(go())


@commands.command()
def recall(
    query: Annotated[str, typer.Argument(help="What to look for.")],
    agent: AgentOption,
    limit: Annotated[int, typer.Option(min=1, max=100)] = 10,
    kind: KindOption = None,
    as_json: JsonOption = False,
) -> None:
    """The agent's memories that match best, best first."""

    async def go() -> None:
        async with _client() as memory:
            hits = await memory.recall(
                query, agent=agent, limit=limit, kinds=[_kind(k) for k in kind or []]
            )
        rows = [{"score": round(hit.score, 3), **_row(hit.memory)} for hit in hits]
        show(rows, as_json=as_json, columns=["score", "id", "kind", "subject", "content"])

    run(go())


@commands.command()
def history(
    memory_id: Annotated[str, typer.Argument(help="A memory's id (or use --subject).")] = "",
    agent: Annotated[str, typer.Option("--agent", "-a", help="With --subject.")] = "",
    subject: Annotated[str, typer.Option(help="Every version of this subject.")] = "",
    as_json: JsonOption = False,
) -> None:
    """Every version of a memory, oldest first: what was believed, and from when to when."""

    async def go() -> None:
        async with _client() as memory:
            versions = await memory.history(memory_id=memory_id, agent=agent, subject=subject)
        show(
            [_row(version) for version in versions],
            as_json=as_json,
            columns=["id", "subject", "content", "valid_from", "valid_to", "superseded_by"],
        )

    run(go())


@commands.command()
def forget(
    memory_id: Annotated[list[str] | None, typer.Argument(help="Memory ids to forget.")] = None,
    agent: Annotated[
        str | None, typer.Option("--agent", "-a", help="With --subject/--kind.")
    ] = None,
    subject: Annotated[str, typer.Option(help="Forget this subject's memories.")] = "",
    kind: KindOption = None,
    hard: Annotated[
        bool, typer.Option(help="Also erase content and vectors (deletion requests).")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Forget memories by id, or an agent's by subject and kind; prints how many."""

    async def go() -> None:
        async with _client() as memory:
            count = await memory.forget(
                ids=memory_id or [],
                agent=agent,
                subject=subject,
                kinds=[_kind(k) for k in kind or []],
                hard=hard,
            )
        show({"forgotten": count}, as_json=as_json)

    run(go())


def _kind(value: str) -> Kind:
    if value not in KINDS:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(KINDS)}", param_hint="--kind")
    return cast("Kind", value)


def _row(memory: Memory) -> dict[str, Any]:
    return {
        "id": memory.id,
        "kind": memory.kind,
        "subject": memory.subject,
        "content": memory.content,
        "valid_from": memory.valid_from.isoformat(timespec="seconds"),
        "valid_to": memory.valid_to.isoformat(timespec="seconds") if memory.valid_to else "",
        "superseded_by": memory.superseded_by,
    }
