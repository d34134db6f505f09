"""What every OpenAI-compatible adapter of this service shares: one client, one endpoint."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Self

import httpx

from mainstay_common.errors import map_httpx_errors

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["OpenAIAdapter"]


class OpenAIAdapter:
    """An ``httpx.AsyncClient`` posting JSON to ``{base_url}/{path}`` for one ``model``.

    ``_target`` (``POST scheme://host:port/path``) names the endpoint in error
    messages without user-info or query string, which may carry secrets.
    """

    def __init__(
        self, *, base_url: str, path: str, model: str, api_key: str | None, timeout_s: float
    ) -> None:
        headers = {"Accept": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._url = httpx.URL(f"{base_url.rstrip('/')}/{path}")
        port = f":{self._url.port}" if self._url.port is not None else ""
        self._target = f"POST {self._url.scheme}://{self._url.host}{port}{self._url.path}"
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(timeout_s), headers=headers)
        self._model = model

    @property
    def model_name(self) -> str:
        return self._model

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _post(self, service: str, payload: Mapping[str, Any]) -> bytes:
        """The body of a 2xx answer; transport failures and error statuses are translated."""
        with map_httpx_errors(service):
            response = await self._client.post(self._url, json=payload)
            response.raise_for_status()
        return response.content
