"""A real HTTP tool server on loopback that counts every call that reaches it.

Every tool is ``POST /tools/<name>``: it answers ``{"tool", "arguments",
"call"}`` (``call`` counts the tool's calls, 1 first). Each call is counted per
tool and per idempotency key: the ``Idempotency-Key`` header the gateway sends,
else an ``idempotency_key`` argument. :meth:`ToolServer.fail_next` makes the next
N calls of a tool answer 503 (the gateway's ``TRANSIENT``) and
:meth:`ToolServer.fail_randomly` makes a share of its calls answer 503; those are
counted too, since they reached the tool, and :meth:`ToolServer.effects_by_key` counts
only the calls that succeeded (the side effects that happened).
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from typing import TYPE_CHECKING, Any, Self

from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from mainstay_common.http import HttpServer

if TYPE_CHECKING:
    from starlette.requests import Request

__all__ = ["ToolServer"]


class ToolServer:
    """``async with ToolServer() as tools``: serves on a free loopback port."""

    def __init__(self) -> None:
        self._calls: Counter[str] = Counter()
        self._by_key: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self._effects: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self._failing: Counter[str] = Counter()
        self._failure_rates: dict[str, float] = {}
        self._random = random.Random()
        self.random_failures: Counter[str] = Counter()
        """503s answered by :meth:`fail_randomly`, per tool."""
        app = Starlette(routes=[Route("/tools/{name}", self._serve, methods=["POST"])])
        self._server = HttpServer(app, host="127.0.0.1", port=0)

    async def __aenter__(self) -> Self:
        await self._server.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._server.__aexit__(*exc)

    def url(self, tool: str) -> str:
        """The endpoint of ``tool``."""
        return f"{self._server.url}/tools/{tool}"

    def fail_next(self, tool: str, count: int) -> None:
        """The next ``count`` calls of ``tool`` answer 503."""
        self._failing[tool] = count

    def fail_randomly(self, tool: str, probability: float, seed: int | None = None) -> None:
        """From now on each call of ``tool`` answers 503 with ``probability`` (0: never again),
        after any :meth:`fail_next` failures; ``seed`` makes the draws repeatable."""
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"probability must be within [0, 1], not {probability}")
        if seed is not None:
            self._random.seed(seed)
        if probability:
            self._failure_rates[tool] = probability
        else:
            self._failure_rates.pop(tool, None)

    def calls(self, tool: str) -> int:
        """Calls of ``tool`` that reached the server, failed ones included."""
        return self._calls[tool]

    def by_key(self, tool: str) -> dict[str, int]:
        """Calls of ``tool`` that reached the server, per idempotency key."""
        return dict(self._by_key[tool])

    def effects_by_key(self, tool: str) -> dict[str, int]:
        """Calls of ``tool`` that succeeded, per idempotency key."""
        return dict(self._effects[tool])

    async def _serve(self, request: Request) -> JSONResponse:
        tool = request.path_params["name"]
        body = await request.body()
        arguments: Any = await request.json() if body else {}
        key = request.headers.get("idempotency-key") or ""
        if not key and isinstance(arguments, dict):
            key = str(arguments.get("idempotency_key", ""))
        self._calls[tool] += 1
        self._by_key[tool][key] += 1
        if self._failing[tool] > 0:
            self._failing[tool] -= 1
            return JSONResponse({"error": "temporarily unavailable"}, status_code=503)
        rate = self._failure_rates.get(tool, 0.0)
        if rate and self._random.random() < rate:
            self.random_failures[tool] += 1
            return JSONResponse({"error": "temporarily unavailable"}, status_code=503)
        self._effects[tool][key] += 1
        return JSONResponse({"tool": tool, "arguments": arguments, "call": self._calls[tool]})
