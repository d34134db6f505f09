"""Model providers: one call of one model, whatever API it speaks.

The execution loop asks :class:`Providers` for a completion with the
provider-neutral types of :mod:`.base`; the adapter named by
``ModelRef.provider`` (:mod:`.openai` for OpenAI-compatible chat completions,
:mod:`.anthropic` for the Messages API) translates, sends it over one shared
``httpx.AsyncClient`` with ``ModelRef.timeout_s`` as the deadline, and
answers a :class:`ModelReply` or raises a :class:`ModelError` whose ``kind``
says how to retry. Retries, fallbacks and circuit breakers are the loop's:
an adapter makes exactly one request per call, so the loop sees and charges
every attempt.

httpx is instrumented by ``mainstay_common.telemetry``, so each call is a span
of the task's trace without anything here.

Real providers are not reachable from the development machines: the tests and
the demo point ``ModelRef.base_url`` at
:class:`~mainstay_execution.testing.fake_models.FakeModelServer`, a scripted
server on loopback that speaks both APIs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Self

import httpx

from mainstay_execution.providers.anthropic import DEFAULT_MAX_TOKENS, AnthropicProvider
from mainstay_execution.providers.base import (
    ErrorKind,
    Message,
    ModelError,
    ModelReply,
    Provider,
    Role,
    ToolCall,
    ToolSpec,
    Usage,
)
from mainstay_execution.providers.openai import OpenAIProvider

if TYPE_CHECKING:
    from collections.abc import Sequence

    from mainstay_contracts.supervisor import ModelRef

__all__ = [
    "ErrorKind",
    "Message",
    "ModelError",
    "ModelReply",
    "Provider",
    "Providers",
    "Role",
    "ToolCall",
    "ToolSpec",
    "Usage",
]

_USER_AGENT = "mainstay-execution/0.1"


class Providers:
    """Every provider over one connection pool: ``async with Providers() as providers``.

    ``client`` lets a caller bring its own ``httpx.AsyncClient`` (it is then the
    caller's to close); otherwise one is made here with at most
    ``max_connections`` connections and closed by :meth:`aclose`.
    """

    def __init__(
        self,
        *,
        client: httpx.AsyncClient | None = None,
        max_connections: int = 100,
        default_max_tokens: int = DEFAULT_MAX_TOKENS,
    ) -> None:
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            # Replaced by each call's ModelRef.timeout_s; this only guards a stray use.
            timeout=httpx.Timeout(60.0),
            follow_redirects=False,
            headers={"user-agent": _USER_AGENT},
        )
        self._adapters: dict[str, Provider] = {
            "openai": OpenAIProvider(self._client),
            "anthropic": AnthropicProvider(self._client, default_max_tokens=default_max_tokens),
        }

    async def complete(
        self,
        model: ModelRef,
        messages: Sequence[Message],
        tools: Sequence[ToolSpec],
        *,
        api_key: str | None = None,
    ) -> ModelReply:
        """One request to ``model``: its reply, or a :class:`ModelError` saying how to retry."""
        adapter = self._adapters.get(model.provider)
        if adapter is None:  # ModelRef validates the name; this guards a model_construct()
            raise ModelError(
                f"{model.provider} model {model.model!r}: unknown provider {model.provider!r}",
                kind="permanent",
                provider=model.provider,
                model=model.model,
            )
        return await adapter.complete(model, messages, tools, api_key=api_key)

    async def aclose(self) -> None:
        """Close the connection pool (when it is ours); later calls fail."""
        if self._owns_client:
            await self._client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()
