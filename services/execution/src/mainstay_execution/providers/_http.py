"""What both adapters share: one POST with a deadline, and every failure as a :class:`ModelError`.

The classification table is in :mod:`.base`. Here is where it is applied:

* the whole exchange (connect, send, wait, read) runs under ``ModelRef.timeout_s``
  as one deadline, not only per socket operation, so a server that trickles
  bytes cannot hold a task for longer than its model allows;
* an error response's own message (``error.message`` in OpenAI, Anthropic,
  vLLM and Ollama bodies) is quoted, shortened, with the API key cut out
  wherever it appears, because some proxies echo the credential they refused;
* ``Retry-After`` is read in seconds or as an HTTP date, after OpenAI's
  ``retry-after-ms`` when present.

Tool names: Mainstay allows dots (``weather.lookup``) but both APIs accept only
``[A-Za-z0-9_-]{1,64}``, so :class:`ToolNames` gives each tool of a request a
wire name and maps the model's calls back; a name the model invents is left
as it is (the loop reports it as an unknown tool).
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from mainstay_common.errors import parse_retry_after as parse_retry_after_header
from mainstay_execution.providers.base import ErrorKind, ModelError

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from mainstay_contracts.supervisor import ModelRef

__all__ = [
    "Call",
    "ToolNames",
    "classify_status",
    "count",
    "parse_retry_after",
    "post_json",
    "sanitize_tool_name",
]

_MESSAGE_LIMIT = 500
_WIRE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_REDACTED = "[redacted]"


@dataclass(frozen=True, slots=True)
class Call:
    """One request being made: what every error message names."""

    provider: str
    model: ModelRef
    url: str
    api_key: str | None

    @property
    def target(self) -> str:
        """Scheme, host, port and path: user-info and query strings may hold secrets."""
        try:
            url = httpx.URL(self.url)
        except httpx.InvalidURL:
            return "<invalid url>"
        port = f":{url.port}" if url.port is not None else ""
        return f"{url.scheme}://{url.host}{port}{url.path}"

    def error(
        self,
        kind: ErrorKind,
        what: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> ModelError:
        message = f"{self.provider} model {self.model.model!r} via {self.target}: {what}"
        return ModelError(
            self.redact(message),
            kind=kind,
            provider=self.provider,
            model=self.model.model,
            status=status,
            retry_after=retry_after,
        )

    def malformed(self, problem: str) -> ModelError:
        return self.error("malformed", f"malformed response: {problem}", status=200)

    def redact(self, text: str) -> str:
        return text.replace(self.api_key, _REDACTED) if self.api_key else text


async def post_json(
    client: httpx.AsyncClient, call: Call, headers: Mapping[str, str], payload: Any
) -> Any:
    """POST ``payload`` to ``call.url``; the decoded JSON body of a 2xx answer.

    Raises :class:`ModelError` for everything else. The API key travels only in
    ``headers``; nothing here logs them.
    """
    try:
        content = json.dumps(payload, ensure_ascii=False, allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise call.error("permanent", f"the request is not valid JSON: {exc}") from exc
    timeout_s = call.model.timeout_s
    try:
        async with asyncio.timeout(timeout_s):
            response = await client.post(
                call.url,
                content=content,
                headers={"content-type": "application/json", **headers},
                timeout=httpx.Timeout(timeout_s),
            )
    except TimeoutError as exc:  # our deadline over the whole exchange
        raise call.error("transient", f"no answer within {timeout_s:g} s") from exc
    except httpx.TimeoutException as exc:
        raise call.error("transient", f"{_words(exc)} after {timeout_s:g} s") from exc
    except (httpx.UnsupportedProtocol, httpx.LocalProtocolError, httpx.InvalidURL) as exc:
        raise call.error("permanent", f"cannot send the request: {_words(exc)}: {exc}") from exc
    except httpx.DecodingError as exc:
        raise call.error("malformed", f"undecodable response: {exc}") from exc
    except httpx.HTTPError as exc:  # connect, read, write, a dropped connection, proxies
        raise call.error("transient", f"{_words(exc)}: {_short(str(exc))}") from exc
    if response.is_success:
        try:
            return json.loads(response.content)
        except ValueError as exc:  # includes a body that is not UTF-8
            raise call.malformed(f"the body is not JSON ({_describe_body(response)})") from exc
    raise _status_error(call, response)


def _status_error(call: Call, response: httpx.Response) -> ModelError:
    status = response.status_code
    error_type, code, message = _error_details(response)
    kind = classify_status(status, error_type=error_type, code=code)
    retry_after = parse_retry_after(response.headers)
    what = f"HTTP {status} {response.reason_phrase}".rstrip()
    labels = [label for label in (error_type, code) if label]
    if labels:
        what += f" ({', '.join(dict.fromkeys(labels))})"
    if message:
        what += f": {message}"
    elif not response.content:
        what += ": empty body"
    else:
        what += f": {_describe_body(response)}"
    if retry_after is not None:
        what += f"; retry after {retry_after:.3g} s"
    return call.error(kind, what, status=status, retry_after=retry_after)


def classify_status(status: int, *, error_type: str = "", code: str = "") -> ErrorKind:
    """How an HTTP error status should be retried (the table in :mod:`.base`)."""
    if status == 429:
        # OpenAI answers an exhausted account with 429 too; waiting does not refill it.
        return "permanent" if "insufficient_quota" in (error_type, code) else "rate_limited"
    if status in {503, 529} or error_type == "overloaded_error":
        return "overloaded"
    if status in {408, 409} or status >= 500:
        return "transient"
    return "permanent"


def _error_details(response: httpx.Response) -> tuple[str, str, str]:
    """``(type, code, message)`` of an error body, in any of the shapes servers use."""
    try:
        document: Any = json.loads(response.content)
    except ValueError:
        return "", "", ""
    if not isinstance(document, dict):
        return "", "", ""
    error = document.get("error")
    if isinstance(error, str):  # Ollama, some proxies
        return "", "", _short(error)
    if not isinstance(error, dict):  # vLLM puts the fields at the top level
        error = document
    message = error.get("message")
    return (
        _label(error.get("type")),
        _label(error.get("code")),
        _short(message) if isinstance(message, str) else "",
    )


def _label(value: object) -> str:
    return value[:100] if isinstance(value, str) else ""


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait: ``retry-after-ms``, else ``Retry-After`` (seconds or an HTTP date)."""
    millis = _finite(headers.get("retry-after-ms"))
    if millis is not None:
        return max(0.0, millis / 1000)
    return parse_retry_after_header(headers.get("retry-after"))


def _finite(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _describe_body(response: httpx.Response) -> str:
    kind = response.headers.get("content-type", "no content type").split(";")[0]
    return f"{len(response.content)} bytes of {kind}"


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MESSAGE_LIMIT else text[:_MESSAGE_LIMIT] + "..."


def _words(exc: Exception) -> str:
    """``ConnectTimeout`` -> ``connect timeout``."""
    return re.sub(r"(?<!^)(?=[A-Z])", " ", type(exc).__name__).lower()


def count(value: object) -> int:
    """A token count from a usage object: anything but a non-negative integer is 0."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return 0
    return value


class ToolNames:
    """Wire names for one request's tools, and the way back.

    A valid name is kept; an invalid one has each disallowed character replaced
    by ``_`` and is cut to 64 characters, with a numeric suffix when that
    collides with another tool's name.
    """

    def __init__(self, names: Iterable[str]) -> None:
        self._to_wire: dict[str, str] = {}
        self._from_wire: dict[str, str] = {}
        names = list(dict.fromkeys(names))
        taken = {name for name in names if _WIRE_NAME.match(name)}
        for name in names:
            wire = name
            if not _WIRE_NAME.match(name):
                wire = sanitize_tool_name(name)
                suffix = 2
                while wire in taken:
                    tail = f"_{suffix}"
                    wire = sanitize_tool_name(name)[: 64 - len(tail)] + tail
                    suffix += 1
                taken.add(wire)
            self._to_wire[name] = wire
            self._from_wire[wire] = name

    def to_wire(self, name: str) -> str:
        return self._to_wire.get(name) or sanitize_tool_name(name)

    def from_wire(self, wire: str) -> str:
        return self._from_wire.get(wire, wire)


def sanitize_tool_name(name: str) -> str:
    """``weather.lookup`` -> ``weather_lookup``: what both APIs accept as a tool name."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", name)[:64] or "_"
