"""Request bodies a service will read: bounded in size, and JSON that is UTF-8 and shallow.

Without a bound, one request can make a service buffer (and then parse) any amount
of memory; JSON nested thousands of levels deep makes the parser recurse until
Python gives up, and a body that is not UTF-8 fails deep inside the framework with
a message that names nothing. :class:`BodyLimitMiddleware` reads the body first
and refuses those with a clear error in the Mainstay shape:

- more than ``max_body_bytes`` (by ``Content-Length`` before reading anything, or
  while streaming a chunked body): 413 ``PayloadTooLarge``;
- a JSON body (``content-type`` ``application/json`` or ``...+json``) that is not
  valid UTF-8: 400 ``InvalidArgument`` with the byte offset;
- a JSON body nested deeper than ``max_json_depth`` arrays/objects: 400
  ``InvalidArgument``.

A body that passes is replayed to the app unchanged; later ``receive`` calls (a
client disconnecting during a streamed answer) go straight through.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from mainstay_common.http._errors import error_response

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["DEFAULT_MAX_BODY_BYTES", "DEFAULT_MAX_JSON_DEPTH", "BodyLimitMiddleware", "json_depth"]

DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_JSON_DEPTH = 64

# A JSON string (escapes included) or one bracket; everything else is skipped.
_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)


class _TooLarge(Exception):
    pass


def json_depth(body: bytes, limit: int) -> int:
    """How deep ``body``'s arrays and objects nest, counting no further than ``limit + 1``.

    Brackets inside strings do not count. Works on invalid JSON too (the parser
    rejects that later, with its own message).
    """
    depth = deepest = 0
    for match in _TOKENS.finditer(body):
        token = match.group()
        if token in (b"[", b"{"):
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    break
        elif token in (b"]", b"}"):
            depth -= 1
    return deepest


def _is_json(scope: Scope) -> bool:
    for name, value in scope.get("headers", ()):
        if name == b"content-type":
            media = value.split(b";", 1)[0].strip().lower()
            return bool(media == b"application/json" or media.endswith(b"+json"))
    return False


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class BodyLimitMiddleware:
    """Reads and checks every request body before the app sees it (see the module docstring)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        max_json_depth: int = DEFAULT_MAX_JSON_DEPTH,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_json_depth = max_json_depth

    def _too_large(self) -> str:
        return f"the request body is larger than the limit of {self.max_body_bytes} bytes"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") in {"GET", "HEAD", "OPTIONS"}:
            await self.app(scope, receive, send)
            return
        declared = _declared_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            await error_response(413, "PayloadTooLarge", self._too_large())(scope, receive, send)
            return
        try:
            body, last = await self._read(receive)
        except _TooLarge:
            await error_response(413, "PayloadTooLarge", self._too_large())(scope, receive, send)
            return
        if last["type"] != "http.request":
            return  # nobody is left to answer
        if body and _is_json(scope):
            problem = self._json_problem(body)
            if problem is not None:
                await error_response(400, "InvalidArgument", problem)(scope, receive, send)
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {**last, "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _read(self, receive: Receive) -> tuple[bytes, Message]:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return b"".join(chunks), message  # the client left before sending it all
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise _TooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks), message

    def _json_problem(self, body: bytes) -> str | None:
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as exc:
            return (
                f"the request body is not valid UTF-8: byte 0x{body[exc.start]:02x}"
                f" at offset {exc.start} ({exc.reason})"
            )
        if json_depth(body, self.max_json_depth) > self.max_json_depth:
            return (
                f"the request body nests arrays and objects deeper than"
                f" {self.max_json_depth} levels"
            )
        return None
