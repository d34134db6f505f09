"""``mainstay``: the mesh from a terminal — agents, tasks, memory, inbox, tools, dead
letters, spend and the fleet.

Addresses and the token come from the environment (see :class:`CliSettings`):
``MAINSTAY_TOKEN`` or ``MAINSTAY_TOKEN_FILE``, ``MAINSTAY_KAFKA_BOOTSTRAP``,
``MAINSTAY_MEMORY_TARGET`` and ``MAINSTAY_<SERVICE>_URL``.
"""

from __future__ import annotations

import typer

from mainstay_client.cli import _humans, _memory, _supervisor, _tasks
from mainstay_client.cli._core import CliSettings

__all__ = ["CliSettings", "app", "main"]

app = typer.Typer(
    name="mainstay",
    help=(
        "Mainstay from a terminal. Reads MAINSTAY_TOKEN (or MAINSTAY_TOKEN_FILE) and the"
        " services' addresses from the environment; --json on any command prints JSON."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(_supervisor.agents, name="agents")
app.add_typer(_tasks.commands, name="tasks")
app.add_typer(_memory.commands, name="memory")
app.add_typer(_humans.inbox, name="inbox")
app.add_typer(_humans.tools, name="tools")
app.add_typer(_supervisor.dlq, name="dlq")
app.add_typer(_humans.spend, name="spend")
app.add_typer(_supervisor.fleet, name="fleet")


def main() -> None:
    app()
