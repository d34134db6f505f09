"""A real HTTP tool server on loopback whose behaviour a test programs, and that counts calls."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mainstay_common.http import HttpServer

if TYPE_CHECKING:
    from starlette.requests import Request

__all__ = ["ToolServer"]


@dataclass
class ToolServer:
    """``/echo`` answers the JSON body and the headers it got; the rest are programmable.

    ``fail_next[path]`` makes the next N calls of ``/flaky/<path>`` answer 503;
    ``/slow`` sleeps ``slow_s`` first; ``/limited`` answers 429 with
    ``Retry-After: retry_after`` while ``limited`` is true; ``/reject`` is 400;
    ``/big`` returns ``big_bytes`` of JSON; ``/wrong`` returns an object missing
    what its output schema asks for.
    """

    calls: Counter[str] = field(default_factory=Counter)
    by_key: Counter[str] = field(default_factory=Counter)
    fail_next: Counter[str] = field(default_factory=Counter)
    slow_s: float = 5.0
    limited: bool = True
    retry_after: str = "2"
    big_bytes: int = 1_000_000
    last_headers: dict[str, str] = field(default_factory=dict)
    server: HttpServer | None = None

    @property
    def base_url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.port}"

    async def _count(self, request: Request, name: str) -> Any:
        self.calls[name] += 1
        key = request.headers.get("idempotency-key")
        if key:
            self.by_key[key] += 1
        self.last_headers = dict(request.headers)
        body = await request.body()
        return json.loads(body) if body else None

    async def echo(self, request: Request) -> Response:
        body = await self._count(request, "echo")
        return JSONResponse({"body": body, "authorization": request.headers.get("authorization")})

    async def flaky(self, request: Request) -> Response:
        name = request.path_params["name"]
        await self._count(request, f"flaky/{name}")
        if self.fail_next[name] > 0:
            self.fail_next[name] -= 1
            return JSONResponse({"error": "temporarily down"}, status_code=503)
        return JSONResponse({"ok": True})

    async def slow(self, request: Request) -> Response:
        await self._count(request, "slow")
        await asyncio.sleep(self.slow_s)
        return JSONResponse({"late": True})

    async def limited_route(self, request: Request) -> Response:
        await self._count(request, "limited")
        if self.limited:
            return JSONResponse(
                {"error": "slow down"}, status_code=429, headers={"Retry-After": self.retry_after}
            )
        return JSONResponse({"ok": True})

    async def reject(self, request: Request) -> Response:
        await self._count(request, "reject")
        return JSONResponse({"error": "no such customer"}, status_code=400)

    async def big(self, request: Request) -> Response:
        await self._count(request, "big")
        return Response(json.dumps({"blob": "x" * self.big_bytes}), media_type="application/json")

    async def wrong(self, request: Request) -> Response:
        await self._count(request, "wrong")
        return JSONResponse({"unexpected": 1})

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/echo", self.echo, methods=["POST", "GET"]),
                Route("/flaky/{name}", self.flaky, methods=["POST"]),
                Route("/slow", self.slow, methods=["POST"]),
                Route("/limited", self.limited_route, methods=["POST"]),
                Route("/reject", self.reject, methods=["POST"]),
                Route("/big", self.big, methods=["POST"]),
                Route("/wrong", self.wrong, methods=["POST"]),
            ]
        )

    async def __aenter__(self) -> ToolServer:
        self.server = HttpServer(self.app(), host="127.0.0.1", port=0)
        await self.server.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        await self.server.__aexit__(*exc)
