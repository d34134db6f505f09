"""``python -m mainstay_common.devstack up|down|status|logs``: the stack from a terminal."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import httpx
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mainstay_common.devstack._home import BROKER, POSTGRES, StackError
from mainstay_common.devstack._process import tail
from mainstay_common.devstack._services import identity_base_url, identity_port, memory_target
from mainstay_common.devstack._stack import DEFAULT_KAFKA_PORT, DEFAULT_PG_PORT, EmbeddedStack

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from mainstay_common.devstack._status import ComponentStatus
    from mainstay_execution.demo import ExecutionFaults

__all__ = ["app", "main"]

app = typer.Typer(
    name="devstack",
    help=(
        "Mainstay's development stack on this machine, without Docker: a Kafka-API broker, "
        "PostgreSQL with pgvector and every service. Set MAINSTAY_KAFKA_BOOTSTRAP or "
        "MAINSTAY_POSTGRES_DSN to use real servers instead of the embedded ones."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_out = Console(highlight=False)
_err = Console(stderr=True, highlight=False)

HomeOption = Annotated[
    Path | None,
    typer.Option(
        "--home",
        help="State folder (default: $MAINSTAY_HOME, else ./.mainstay).",
        show_default=False,
    ),
]
RepoOption = Annotated[
    Path | None,
    typer.Option(
        "--repo-root",
        help="Workspace whose services/ are started (default: the current directory).",
        show_default=False,
    ),
]

_STATE_STYLE = {"up": "green", "down": "red", "external": "cyan"}


def _stack(
    home: Path | None,
    repo_root: Path | None,
    *,
    kafka_port: int = DEFAULT_KAFKA_PORT,
    pg_port: int = DEFAULT_PG_PORT,
    start_services: bool = True,
    timeout: float = 60.0,
) -> EmbeddedStack:
    return EmbeddedStack.from_env(
        home=home,
        repo_root=repo_root,
        kafka_port=kafka_port,
        pg_port=pg_port,
        start_services=start_services,
        startup_timeout_s=timeout,
        report=lambda line: _out.print(f"[dim]•[/dim] {escape(line)}", soft_wrap=True),
    )


def _print_status(rows: list[ComponentStatus]) -> None:
    table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
    for column in ("component", "state", "address", "pid"):
        table.add_column(column)
    for row in rows:
        style = _STATE_STYLE[row.state]
        pid = "" if row.pid is None else str(row.pid)
        table.add_row(row.name, f"[{style}]{row.state}[/{style}]", row.address, pid)
    _out.print(table)


def _fail(error: StackError) -> typer.Exit:
    _err.print(f"[bold red]error:[/bold red] {escape(str(error))}", soft_wrap=True)
    return typer.Exit(code=1)


@app.command()
def up(
    *,
    home: HomeOption = None,
    repo_root: RepoOption = None,
    kafka_port: Annotated[
        int, typer.Option(help="Port of the embedded broker.")
    ] = DEFAULT_KAFKA_PORT,
    pg_port: Annotated[
        int, typer.Option(help="Port of the embedded PostgreSQL.")
    ] = DEFAULT_PG_PORT,
    services: Annotated[
        bool, typer.Option("--services/--no-services", help="Start the services too.")
    ] = True,
    timeout: Annotated[
        float, typer.Option(help="Seconds each component may take to answer.")
    ] = 60.0,
) -> None:
    """Start the broker, PostgreSQL, the identity service (which signs admin.token in the
    home) and the other services; what already runs is left alone."""
    stack = _stack(
        home,
        repo_root,
        kafka_port=kafka_port,
        pg_port=pg_port,
        start_services=services,
        timeout=timeout,
    )
    try:
        rows = asyncio.run(stack.up())
    except StackError as error:
        failure = _fail(error)
        _err.print("[dim]what did start keeps running; `down` stops it[/dim]")
        raise failure from None
    _print_status(rows)
    _out.print(
        f"\nexport MAINSTAY_KAFKA_BOOTSTRAP={stack.kafka_bootstrap}\n"
        f"export MAINSTAY_POSTGRES_DSN={stack.postgres_dsn}\n"
        f"export MAINSTAY_HOME={stack.home.root}",
        markup=False,
    )


_DEFAULT_HTTP_PORTS = {"tools-gateway": 8102, "ledger": 8104, "supervisor": 8105, "execution": 8106}


def _service_urls(environ: Mapping[str, str]) -> dict[str, str]:
    """The HTTP base URL of each service the execution demo talks to (``<SVC>_HTTP_PORT``)."""
    urls = {"identity": identity_base_url(identity_port(environ))}
    for name, default in _DEFAULT_HTTP_PORTS.items():
        port = environ.get(f"{name.upper().replace('-', '_')}_HTTP_PORT", "").strip()
        urls[name] = f"http://127.0.0.1:{port or default}"
    return urls


@app.command()
def demo(*, home: HomeOption = None, repo_root: RepoOption = None) -> None:
    """Start the stack if needed, then run a real round trip through the bus and report it."""
    from mainstay_common.devstack._demo import run_demo  # noqa: PLC0415 - only the demo needs the bus
    from mainstay_common.devstack._demo_identity import run_identity_demo  # noqa: PLC0415
    from mainstay_common.devstack._demo_memory import run_memory_demo  # noqa: PLC0415
    from mainstay_common.devstack._demo_tools import run_tools_demo  # noqa: PLC0415

    stack = _stack(home, repo_root)

    async def run() -> bool:
        rows = await stack.up()
        _print_status(rows)
        _out.print(
            "\n[bold]demo:[/bold] a round trip through the bus on the broker and PostgreSQL above"
        )
        report = await run_demo(stack.kafka_bootstrap, stack.postgres_dsn, _out)
        ok = report.ok
        running = {row.name for row in await stack.status() if row.state == "up"}
        if "memory" in running:
            target = memory_target(os.environ)
            _out.print(f"\n[bold]demo:[/bold] memory over gRPC at {target}")
            memory = await run_memory_demo(target, stack.home.root, _out)
            ok = ok and memory.ok
        if "tools-gateway" in running:
            tools_url = f"http://127.0.0.1:{os.environ.get('TOOLS_GATEWAY_HTTP_PORT', '8102')}"
            _out.print(f"\n[bold]demo:[/bold] the tools gateway at {tools_url}")
            tools = await run_tools_demo(tools_url, stack.home.root, _out)
            ok = ok and tools.ok
        if "identity" in running:
            identity_url = identity_base_url(identity_port(os.environ))
            _out.print(f"\n[bold]demo:[/bold] identity and approvals at {identity_url}")
            identity = await run_identity_demo(
                identity_url, stack.kafka_bootstrap, stack.home.root, _out
            )
            ok = ok and identity.ok
        if "execution" in running:
            # Only here: the execution part needs the execution service's package, which
            # mainstay_common does not depend on.
            from mainstay_execution.demo import run_execution_demo  # noqa: PLC0415

            urls = _service_urls(os.environ)
            _out.print(
                "\n[bold]demo:[/bold] the workload: two agents, a batch of tasks, faults on"
                f" purpose (execution at {urls['execution']})"
            )

            execution = await run_execution_demo(
                stack.kafka_bootstrap,
                stack.home.root,
                _out,
                urls=urls,
                memory_target=memory_target(os.environ),
                faults=_execution_faults(stack, urls["execution"]),
                topic_prefix=os.environ.get("MAINSTAY_KAFKA_TOPIC_PREFIX", ""),
            )
            ok = ok and execution.ok
        return ok

    try:
        ok = asyncio.run(run())
    except StackError as error:
        raise _fail(error) from None
    _out.print("[dim]the stack keeps running; `./dev down` stops it[/dim]")
    if not ok:
        raise typer.Exit(code=1)


def _execution_faults(stack: EmbeddedStack, url: str) -> ExecutionFaults:
    """What the demo does to the stack's execution service: SIGKILL it, start it again."""
    from mainstay_execution.demo import ExecutionFaults  # noqa: PLC0415

    async def crash() -> str:
        pid = await stack.kill("execution")
        if pid is None:
            raise StackError("the execution service was not running")
        return f"pid {pid}"

    async def restart() -> None:
        await stack.up()
        async with httpx.AsyncClient(timeout=2.0, trust_env=False) as http:
            for _ in range(600):
                with contextlib.suppress(httpx.TransportError):
                    if (await http.get(f"{url}/readyz")).is_success:
                        return
                await asyncio.sleep(0.2)
        raise StackError("the execution service was not ready 120 s after its restart")

    return ExecutionFaults(crash=crash, restart=restart)


@app.command()
def down(*, home: HomeOption = None, repo_root: RepoOption = None) -> None:
    """Stop what `up` started: services, then the broker, then PostgreSQL."""
    stack = _stack(home, repo_root)
    try:
        stopped = asyncio.run(stack.down())
    except StackError as error:
        raise _fail(error) from None
    if not stopped:
        _out.print("nothing was running")


@app.command()
def status(*, home: HomeOption = None, repo_root: RepoOption = None) -> None:
    """Show each component, whether it runs and where (always exits 0)."""
    _print_status(asyncio.run(_stack(home, repo_root).status()))


def _log_files(stack: EmbeddedStack, component: str | None) -> list[tuple[str, Path]]:
    home = stack.home
    if component is not None:
        return [(component, home.log_file(component))]
    names = [BROKER, POSTGRES]
    if home.logs.is_dir():
        names += sorted(p.stem for p in home.logs.glob("*.log") if p.stem not in names)
    return [(name, home.log_file(name)) for name in names if home.log_file(name).exists()]


def _follow(files: list[tuple[str, Path]]) -> Iterator[str]:
    positions = {path: path.stat().st_size if path.exists() else 0 for _, path in files}
    while True:
        for name, path in files:
            if not path.exists():
                continue
            size = path.stat().st_size
            position = min(positions[path], size)  # a truncated log starts again
            if size > position:
                with path.open("rb") as handle:
                    handle.seek(position)
                    data = handle.read()
                positions[path] = position + len(data)
                for line in data.decode("utf-8", errors="replace").splitlines():
                    yield f"{name} | {line}" if len(files) > 1 else line
        time.sleep(0.5)


@app.command()
def logs(
    component: Annotated[
        str | None,
        typer.Argument(
            help="broker, postgres or a service name (default: all).", show_default=False
        ),
    ] = None,
    home: HomeOption = None,
    lines: Annotated[int, typer.Option("--lines", "-n", help="How many lines.")] = 50,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new lines.")
    ] = False,
) -> None:
    """Print the last lines of one component's log, or of all of them."""
    stack = _stack(home, None)
    files = _log_files(stack, component)
    if component is not None and not files[0][1].exists():
        _err.print(f"no log for {component!r} at {files[0][1]}", markup=False)
        raise typer.Exit(code=1)
    for name, path in files:
        if len(files) > 1:
            _out.print(f"[bold]==> {name} ({path}) <==[/bold]")
        for line in tail(path, lines):
            _out.print(line, markup=False, highlight=False, soft_wrap=True)
    if follow:
        try:
            for line in _follow(files):
                _out.print(line, markup=False, highlight=False, soft_wrap=True)
        except KeyboardInterrupt:
            return


def main() -> None:
    """Entry point of ``python -m mainstay_common.devstack``."""
    # aiokafka logs every refused connection while a broker starts; the CLI
    # reports failures itself, with the broker's own log.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    app()
