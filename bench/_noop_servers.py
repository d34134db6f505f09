"""The execution benchmark's no-op model and tool, served from a process of their own.

A step's model and tool calls are meant to cost next to nothing. Served from the
benchmark's own process they would wait on its event loop, which also runs most of
the mesh (identity, ledger, memory, supervisor) and the observer; here they get a
process and an event loop (uvloop) to themselves, as a real model provider and tool would.

:class:`NoopServers` starts the process (``multiprocessing``, spawn) with a
:class:`~_mesh.StepResponder` behind the fake model server's OpenAI API and a
:class:`~mainstay_execution.testing.toolserver.ToolServer`, and asks it for the
model's request arrivals when the benchmark needs them.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from typing import TYPE_CHECKING, Any, Self

import uvloop
from _mesh import StepResponder

from mainstay_execution.testing.fake_models import FakeModelServer
from mainstay_execution.testing.toolserver import ToolServer

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

__all__ = ["NoopServers"]

_STOP = "stop"
_ARRIVALS = "arrivals"


def _serve(conn: Connection, model: str, tools: list[str], tool_steps: int) -> None:
    # On uvloop, like the services: the no-op servers should cost next to nothing.
    uvloop.run(_serving(conn, model, tools, tool_steps))


async def _serving(conn: Connection, model: str, tools: list[str], tool_steps: int) -> None:
    responder = StepResponder(tools, tool_steps)
    loop = asyncio.get_running_loop()
    async with ToolServer() as tool_server, FakeModelServer() as models:
        models.respond(model, responder)
        conn.send(
            {
                "model": models.model_ref("openai", model).model_dump(exclude_none=True),
                "tools": {tool: tool_server.url(tool) for tool in tools},
            }
        )
        while (request := await loop.run_in_executor(None, conn.recv)) != _STOP:
            if request == _ARRIVALS:
                conn.send(dict(responder.arrivals))
        conn.send(_STOP)


class NoopServers:
    """``async with NoopServers("primary", ["noop"], 19) as servers``: the model
    ``primary`` answers as a :class:`~_mesh.StepResponder` over ``tools`` would, each of
    ``tools`` answers at once; :attr:`model_ref` and :attr:`tool_urls` point at them."""

    def __init__(self, model: str, tools: list[str], tool_steps: int) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(
            target=_serve, args=(child, model, tools, tool_steps), daemon=True
        )
        self.model_ref: dict[str, Any] = {}
        self.tool_urls: dict[str, str] = {}

    async def _receive(self) -> Any:
        loop = asyncio.get_running_loop()
        if not await loop.run_in_executor(None, self._conn.poll, 60):
            raise RuntimeError("the no-op model and tool process did not answer within 60 s")
        return self._conn.recv()

    async def __aenter__(self) -> Self:
        self._process.start()
        ready = await self._receive()
        self.model_ref, self.tool_urls = ready["model"], ready["tools"]
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            self._conn.send(_STOP)
            await self._receive()
        finally:
            self._process.join(10)
            if self._process.is_alive():
                self._process.kill()

    async def arrivals(self) -> dict[str, list[float]]:
        """Epoch milliseconds of each model request so far, by the task's input."""
        self._conn.send(_ARRIVALS)
        answer: dict[str, list[float]] = await self._receive()
        return answer
