"""What every OpenAI-compatible adapter of this service shares: the client and its target."""

from __future__ import annotations

from dataclasses import dataclass

import httpx

__all__ = ["OpenAIEndpoint"]


@dataclass(frozen=True)
class OpenAIEndpoint:
    """An httpx client for ``POST {base_url}/{path}`` and how errors name the endpoint."""

    client: httpx.AsyncClient
    url: httpx.URL
    target: str
    """``POST scheme://host:port/path``: no user-info or query string, which may carry secrets."""

    @classmethod
    def create(
        cls, *, base_url: str, path: str, api_key: str | None, timeout_s: float
    ) -> OpenAIEndpoint:
        headers = {"Accept": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        url = httpx.URL(f"{base_url.rstrip('/')}/{path}")
        port = f":{url.port}" if url.port is not None else ""
        return cls(
            client=httpx.AsyncClient(timeout=httpx.Timeout(timeout_s), headers=headers),
            url=url,
            target=f"POST {url.scheme}://{url.host}{port}{url.path}",
        )
