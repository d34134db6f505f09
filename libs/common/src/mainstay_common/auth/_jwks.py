"""A cached JWKS: the identity service's public keys, from a file or an HTTP(S) URL.

Keys rotate: identity publishes a new key, then starts signing with it. So the
cache is refreshed when it is older than ``cache_s`` *and* when a token names a
``kid`` the cache has not seen. Every refresh attempt, successful or not, is
rate-limited by ``refresh_min_interval_s``, so a flood of tokens with made-up
kids (or an identity outage) costs the JWKS endpoint at most one request per
interval. When a refresh fails the previous keys stay in use: an identity
outage must not turn into a mesh-wide authentication outage.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from mainstay_common.auth._jwk import parse_jwks
from mainstay_common.errors import DependencyTimeout, DependencyUnavailable

if TYPE_CHECKING:
    from collections.abc import Callable

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

__all__ = ["JwksCache"]

logger = logging.getLogger(__name__)


def _as_url(source: str | Path) -> str | None:
    if isinstance(source, str) and source.startswith(("http://", "https://")):
        return source
    return None


class JwksCache:
    """Verification keys by ``kid``, loaded lazily and refreshed as described above.

    ``http_client`` lets a service share its instrumented client; without one a
    short-lived client is made per fetch, which is cheap at one fetch per
    ``cache_s`` and leaves nothing to close. ``clock`` is injectable so tests
    can step time instead of sleeping.
    """

    def __init__(
        self,
        source: str | Path,
        *,
        cache_s: float = 300.0,
        refresh_min_interval_s: float = 10.0,
        timeout_s: float = 5.0,
        http_client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = _as_url(source)
        self._path = None if self._url else Path(source)
        self._cache_s = cache_s
        self._min_interval = refresh_min_interval_s
        self._timeout = timeout_s
        self._client = http_client
        self._clock = clock
        self._keys: dict[str, Ed25519PublicKey] = {}
        self._loaded_at: float | None = None
        self._attempted_at: float | None = None
        self._attempts = 0
        self._lock = asyncio.Lock()

    @property
    def source(self) -> str:
        """The URL or path keys come from (for logs and error messages)."""
        return self._url or str(self._path)

    @property
    def kids(self) -> frozenset[str]:
        """The key ids currently cached."""
        return frozenset(self._keys)

    async def get_key(self, kid: str) -> Ed25519PublicKey | None:
        """The key named ``kid``, or ``None`` when the JWKS does not publish it.

        Raises :class:`DependencyUnavailable` only when no keys were ever loaded.
        """
        if self._loaded_at is None or self._clock() - self._loaded_at >= self._cache_s:
            if self._may_attempt():
                await self._refresh()
            elif self._lock.locked():
                async with self._lock:
                    pass  # another caller's load is under way: use what it brings
            if self._loaded_at is None:
                raise DependencyUnavailable(
                    f"JWKS from {self.source} is unavailable", retry_after=self._min_interval
                )
        key = self._keys.get(kid)
        if key is None and self._may_attempt():
            await self._refresh()
            key = self._keys.get(kid)
        return key

    async def refresh(self) -> None:
        """Load the keys now, ignoring the rate limit (warm-up, readiness checks).

        Raises :class:`DependencyUnavailable` or :class:`DependencyTimeout` on failure.
        """
        async with self._lock:
            self._attempted_at = self._clock()
            self._attempts += 1
            self._store(await self._load())

    def _may_attempt(self) -> bool:
        return (
            self._attempted_at is None or self._clock() - self._attempted_at >= self._min_interval
        )

    async def _refresh(self) -> None:
        attempts_seen = self._attempts
        async with self._lock:
            if self._attempts != attempts_seen:
                return  # another caller refreshed while this one waited for the lock
            self._attempted_at = self._clock()
            self._attempts += 1
            try:
                keys = await self._load()
            except (DependencyUnavailable, DependencyTimeout) as exc:
                if self._loaded_at is None:
                    raise
                logger.warning("keeping %d cached JWKS keys: %s", len(self._keys), exc)
                return
            self._store(keys)

    def _store(self, keys: dict[str, Ed25519PublicKey]) -> None:
        added = keys.keys() - self._keys.keys()
        if added and self._loaded_at is not None:
            logger.info("JWKS from %s gained keys %s", self.source, sorted(added))
        self._keys = keys
        self._loaded_at = self._clock()

    async def _load(self) -> dict[str, Ed25519PublicKey]:
        raw = await (self._fetch_url(self._url) if self._url else self._read_file())
        try:
            return parse_jwks(json.loads(raw))
        except ValueError as exc:  # json.JSONDecodeError is a ValueError too
            raise DependencyUnavailable(f"invalid JWKS from {self.source}: {exc}") from exc

    async def _read_file(self) -> bytes:
        assert self._path is not None
        try:
            return await asyncio.to_thread(self._path.read_bytes)
        except OSError as exc:
            raise DependencyUnavailable(f"cannot read JWKS file {self._path}: {exc}") from exc

    async def _fetch_url(self, url: str) -> bytes:
        try:
            if self._client is not None:
                response = await self._client.get(url, timeout=self._timeout)
            else:
                async with httpx.AsyncClient(timeout=self._timeout) as client:
                    response = await client.get(url)
            response.raise_for_status()
        except httpx.TimeoutException as exc:
            raise DependencyTimeout(f"timed out fetching JWKS from {url}") from exc
        except httpx.HTTPError as exc:
            raise DependencyUnavailable(f"cannot fetch JWKS from {url}: {exc}") from exc
        return response.content
