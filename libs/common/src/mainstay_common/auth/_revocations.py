"""Revocation as every service checks it: the identity service's feed, polled.

The identity service publishes revocations at ``/v1/revocations`` as digests,
so the feed reveals no client names: a revoked token's ``jti``, or a revoked
client (``sha256("<tenant>/<name>")``) with the time up to which its tokens
are void. A token is refused when its ``jti`` is revoked, or when its subject
or any actor in its ``act`` chain is a revoked client and the token was issued
at or before that revocation.

The feed is read at most every ``poll_s`` (on the first verification after
that), from the last id seen, so a revocation reaches every service within
``poll_s``. If the identity service cannot be reached, the revocations known
so far keep applying and a warning is logged; tokens are not refused for the
outage alone.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from mainstay_common.auth._principal import Principal

__all__ = ["RevocationFeed", "client_digest"]

_log = logging.getLogger("mainstay.auth")


def client_digest(tenant: str, name: str) -> str:
    return hashlib.sha256(f"{tenant}/{name}".encode()).hexdigest()


class RevocationFeed:
    """``await feed.is_revoked(principal)``: the :data:`RevocationCheck` of a verifier."""

    def __init__(
        self,
        url: str,
        *,
        poll_s: float = 5.0,
        timeout_s: float = 5.0,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self.url = url
        self._poll_s = poll_s
        self._timeout_s = timeout_s
        self._client = http_client
        self._owns_client = http_client is None
        self._after = 0
        self._polled_at: float | None = None
        self._jtis: set[str] = set()
        self._clients: dict[str, float] = {}  # digest -> revoked at (epoch seconds)
        self._lock = asyncio.Lock()

    async def is_revoked(self, principal: Principal) -> bool:
        if self._polled_at is None or time.monotonic() - self._polled_at >= self._poll_s:
            await self._poll()
        if principal.token_id in self._jtis:
            return True
        issued_at = principal.claims.get("iat")
        issued = float(issued_at) if isinstance(issued_at, int | float) else 0.0
        for name in (principal.subject, *principal.actor_chain):
            revoked_at = self._clients.get(client_digest(principal.tenant, name))
            if revoked_at is not None and issued <= revoked_at:
                return True
        return False

    async def _poll(self) -> None:
        async with self._lock:
            if self._polled_at is not None and time.monotonic() - self._polled_at < self._poll_s:
                return  # another caller polled while this one waited
            try:
                entries = await self._fetch()
            except (httpx.HTTPError, ValueError) as exc:
                _log.warning("revocation feed %s unavailable: %s", self.url, exc)
                entries = []
            self._polled_at = time.monotonic()
            for entry in entries:
                self._after = max(self._after, int(entry["id"]))
                if entry.get("jti"):
                    self._jtis.add(str(entry["jti"]))
                elif entry.get("client_digest"):
                    digest = str(entry["client_digest"])
                    at = float(entry["revoked_at_epoch"])
                    self._clients[digest] = max(at, self._clients.get(digest, 0.0))

    async def aclose(self) -> None:
        """Close the HTTP client the feed made for itself (a shared one stays open)."""
        if self._owns_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _fetch(self) -> list[dict[str, Any]]:
        if self._client is None:
            # One client for the feed's life: it is read every poll_s, on a request's path,
            # and a new client costs tens of milliseconds (TLS context) each time.
            self._client = httpx.AsyncClient(timeout=self._timeout_s)
        response = await self._client.get(
            self.url, params={"after": str(self._after)}, timeout=self._timeout_s
        )
        response.raise_for_status()
        document = response.json()
        entries = document.get("revocations") if isinstance(document, dict) else None
        if not isinstance(entries, list):
            raise ValueError("the revocation feed is not {'revocations': [...]}")
        return entries
