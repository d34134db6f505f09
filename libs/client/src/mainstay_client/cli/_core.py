"""What every ``mainstay`` command shares: settings, output, errors, HTTP calls.

Output is a human table by default and JSON with ``--json`` (for scripts). A
command that fails prints one line naming what went wrong on stderr and exits
with code 1 (2 for bad usage, as click does).
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Annotated, Any, NoReturn, TypeVar
from urllib.parse import quote

import httpx
import typer
from pydantic import Field, ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mainstay_client._settings import ClientError, ClientSettings, tenant_of

__all__ = [
    "CliSettings",
    "JsonOption",
    "Service",
    "fail",
    "load_settings",
    "out",
    "run",
    "segment",
    "show",
    "supervisor_api",
]

T = TypeVar("T")

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON (for scripts).")]


class CliSettings(ClientSettings):
    """The client's settings plus each service's HTTP address (``MAINSTAY_<NAME>_URL``)."""

    supervisor_url: str = Field(default="http://127.0.0.1:8105")
    identity_url: str = Field(default="http://127.0.0.1:8103")
    ledger_url: str = Field(default="http://127.0.0.1:8104")
    tools_gateway_url: str = Field(default="http://127.0.0.1:8102")
    http_timeout_s: float = Field(default=30.0, gt=0)

    def tenant_or(self, tenant: str | None) -> str:
        """``tenant`` when given, else the token's."""
        return tenant or tenant_of(self.bearer())


def load_settings() -> CliSettings:
    """The settings from the environment; a bad value ends the command naming it."""
    try:
        return CliSettings()
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "settings"
        fail(f"bad settings in the environment: {first['msg']} ({where})")


def supervisor_api() -> tuple[CliSettings, Service]:
    """The settings, and the supervisor's API with them."""
    loaded = load_settings()
    return loaded, Service(loaded, "supervisor", loaded.supervisor_url)


def segment(value: str) -> str:
    """``value`` as one segment of a URL path."""
    return quote(value, safe="")


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``message`` on stderr and exit with ``code``."""
    err.print(f"[red]error:[/red] {escape(message)}")
    raise typer.Exit(code)


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine; a :class:`ClientError` ends the command with its message."""
    try:
        return asyncio.run(coroutine)
    except ClientError as exc:
        fail(str(exc))


def show(
    rows: Sequence[Mapping[str, Any]] | Mapping[str, Any],
    *,
    as_json: bool,
    columns: Sequence[str] | None = None,
    title: str | None = None,
) -> None:
    """Rows as a table (one record: as field/value pairs), or as JSON."""
    if as_json:
        sys.stdout.write(json.dumps(rows, default=str, indent=2) + "\n")
        return
    if isinstance(rows, Mapping):
        table = Table("field", "value", title=title, show_header=False)
        for name, value in rows.items():
            table.add_row(escape(str(name)), escape(_cell(value)))
        out.print(table)
        return
    if not rows:
        out.print(f"[dim]no {title or 'rows'}[/dim]")
        return
    names = list(columns or rows[0].keys())
    table = Table(*names, title=title)
    for row in rows:
        table.add_row(*(escape(_cell(row.get(name))) for name in names))
    out.print(table)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, default=str)
    return str(value)


class Service:
    """One service's HTTP API, called with the caller's token."""

    def __init__(self, settings: CliSettings, name: str, base_url: str) -> None:
        self.name = name
        self._settings = settings
        self._base = base_url.rstrip("/")

    async def call(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: Mapping[str, Any] | None = None,
        ok: Callable[[int], bool] = lambda status: status < 300,
    ) -> Any:
        """The decoded JSON answer (None for an empty one); :class:`ClientError` naming the
        service, the status and the service's own reason otherwise."""
        headers = {"Authorization": f"Bearer {self._settings.bearer()}"}
        url = f"{self._base}{path}"
        try:
            async with httpx.AsyncClient(
                timeout=self._settings.http_timeout_s, trust_env=False
            ) as client:
                answer = await client.request(
                    method,
                    url,
                    json=json_body,
                    params={k: v for k, v in (params or {}).items() if v is not None},
                    headers=headers,
                )
        except httpx.HTTPError as exc:
            raise ClientError(f"the {self.name} at {self._base} is unreachable: {exc}") from exc
        if not ok(answer.status_code):
            raise ClientError(f"the {self.name} answered {answer.status_code}: {_reason(answer)}")
        if not answer.content:
            return None
        try:
            return answer.json()
        except ValueError as exc:
            raise ClientError(f"the {self.name} answered something that is not JSON") from exc


def _reason(answer: httpx.Response) -> str:
    try:
        body = answer.json()
    except ValueError:
        return answer.text[:500] or answer.reason_phrase
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and "message" in error:  # the services' error shape
        return f"{error.get('type', 'Error')}: {error['message']}"
    if isinstance(body, dict) and "detail" in body:
        detail = body["detail"]
        return detail if isinstance(detail, str) else json.dumps(detail)[:500]
    return json.dumps(body)[:500]
