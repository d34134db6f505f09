"""A local server that speaks the OpenAI chat-completions API, for the curator's tests.

Providers are unreachable from the development machines, so the "model" is a
small Starlette app served by uvicorn on 127.0.0.1:0: the adapter's requests
cross a real socket, and timeouts, headers and status codes behave as they
would remotely. The fake answers from a script: the first rule whose marker
occurs in the episode text decides the answer (a JSON document, or a raw
string to break the format), unless a test sets ``respond`` to answer with a
status (429, 503...), a broken body, or a mix decided per request.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest_asyncio
from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mainstay_common.http import HttpServer

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from starlette.requests import Request

API_KEY = "sk-test-curator-not-a-real-key"
MODEL = "gpt-test-curator"


def completion(
    content: str | None, *, model: str = MODEL, finish_reason: str = "stop", **message: Any
) -> dict[str, Any]:
    """A chat completion as OpenAI returns it."""
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None, **message},
                "finish_reason": finish_reason,
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


def episode_of(request: dict[str, Any]) -> str:
    """The episode text a curator request carries (its user message is ``{"episode": ...}``)."""
    [user] = [m for m in request["messages"] if m["role"] == "user"]
    return str(json.loads(user["content"])["episode"])


@dataclass
class FakeChatProvider:
    """Records each request; answers from ``script`` unless a test sets ``respond``."""

    url: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)
    authorizations: list[str | None] = field(default_factory=list)
    script: dict[str, object] = field(default_factory=dict)
    """Marker in the episode -> the model's answer (an object is sent as JSON, a str as is)."""
    respond: Callable[[dict[str, Any]], Awaitable[Response]] | None = None
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def chat(self, request: Request) -> Response:
        payload = await request.json()
        self.requests.append(payload)
        self.authorizations.append(request.headers.get("authorization"))
        if self.respond is not None:
            return await self.respond(payload)
        return self.scripted(payload)

    def scripted(self, payload: dict[str, Any]) -> Response:
        """The answer ``script`` gives (``{"facts": []}`` when no marker matches)."""
        episode = episode_of(payload)
        answer: object = {"facts": []}
        for marker, scripted in self.script.items():
            if marker in episode:
                answer = scripted
                break
        content = answer if isinstance(answer, str) else json.dumps(answer)
        return JSONResponse(completion(content, model=payload["model"]))

    def requests_about(self, marker: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if marker in episode_of(r)]

    def reset(self) -> None:
        self.requests.clear()
        self.authorizations.clear()
        self.script.clear()
        self.respond = None
        self.release.set()  # frees a handler a timeout test left waiting
        self.release = asyncio.Event()


def status(code: int, headers: dict[str, str] | None = None) -> Callable[..., Awaitable[Response]]:
    async def respond(_payload: dict[str, Any]) -> Response:
        return JSONResponse({"error": {"message": "nope"}}, status_code=code, headers=headers)

    return respond


def raw(body: bytes, media_type: str = "application/json") -> Callable[..., Awaitable[Response]]:
    async def respond(_payload: dict[str, Any]) -> Response:
        return Response(body, media_type=media_type)

    return respond


def answer(document: dict[str, Any]) -> Callable[..., Awaitable[Response]]:
    """A whole completion body, for answers the script cannot express (refusals, cuts)."""

    async def respond(_payload: dict[str, Any]) -> Response:
        return JSONResponse(document)

    return respond


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def chat_server() -> AsyncIterator[FakeChatProvider]:
    fake = FakeChatProvider()
    app = Starlette(routes=[Route("/v1/chat/completions", fake.chat, methods=["POST"])])
    async with HttpServer(app, shutdown_timeout_s=2) as running:
        fake.url = f"{running.url}/v1"
        yield fake
    fake.release.set()


@pytest_asyncio.fixture(loop_scope="session")
async def provider(chat_server: FakeChatProvider) -> AsyncIterator[FakeChatProvider]:
    chat_server.reset()
    yield chat_server
    chat_server.reset()
