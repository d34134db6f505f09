"""A service's own tokens from the identity service, one client per tenant.

Mailing a human (an approval request from the ledger, a notice from the
supervisor) means sending mail in the human's tenant, so such a service holds
client credentials of a principal in every tenant it writes to
(``LEDGER_APPROVAL_CREDENTIALS``, ``SUPERVISOR_MAIL_CREDENTIALS``). Tokens are
fetched with OAuth2 client credentials and reused until shortly before they
expire.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx

from mainstay_common.errors import InvalidArgument, MainstayError, map_httpx_errors
from mainstay_common.settings import secret_values

if TYPE_CHECKING:
    from collections.abc import Sequence

    from pydantic import SecretStr

__all__ = ["ClientCredentials", "TokenSource", "parse_credentials"]

_log = logging.getLogger("mainstay.auth.tokens")
# A token is renewed when less than this share of its lifetime is left.
_RENEW_AT = 0.5


@dataclass(frozen=True)
class ClientCredentials:
    client_id: str
    secret: str

    @property
    def tenant(self) -> str:
        return self.client_id.split("/", 1)[0]


def parse_credentials(
    lines: list[str], *, what: str = "client credentials"
) -> dict[str, ClientCredentials]:
    """``<tenant>/<name>:<secret>`` per line, by tenant; a malformed line is named."""
    found: dict[str, ClientCredentials] = {}
    for number, line in enumerate(lines, start=1):
        client_id, sep, secret = line.partition(":")
        tenant, slash, name = client_id.partition("/")
        if not (sep and slash and tenant and name and secret):
            raise InvalidArgument(f"{what}, entry {number}: expected '<tenant>/<name>:<secret>'")
        if tenant in found:
            raise InvalidArgument(f"{what}: tenant '{tenant}' is given twice")
        found[tenant] = ClientCredentials(client_id, secret)
    return found


class TokenSource:
    """Bearer tokens of the service's principal in each configured tenant."""

    def __init__(self, token_url: str, credentials: dict[str, ClientCredentials]) -> None:
        self._url = token_url
        self._credentials = credentials
        self._cache: dict[str, tuple[str, float]] = {}
        self._lock = asyncio.Lock()
        self._http = httpx.AsyncClient(timeout=10.0)

    @classmethod
    def for_identity(
        cls, identity_url: str, secrets: Sequence[SecretStr], file: str | None, *, what: str
    ) -> TokenSource:
        """Tokens from the identity service at ``identity_url`` for the credentials in
        ``secrets`` (or, when empty, ``file``); a malformed entry raises at once, naming it."""
        lines = secret_values(secrets, file, what=what)
        return cls(f"{identity_url.rstrip('/')}/oauth/token", parse_credentials(lines, what=what))

    def has_tenant(self, tenant: str) -> bool:
        return tenant in self._credentials

    async def token(self, tenant: str) -> str:
        """A token of ``tenant``; identity's refusal or absence as a classified error."""
        credentials = self._credentials[tenant]
        async with self._lock:
            cached = self._cache.get(tenant)
            if cached is not None and cached[1] > time.monotonic():
                return cached[0]
            with map_httpx_errors("identity"):
                answer = await self._http.post(
                    self._url,
                    data={
                        "grant_type": "client_credentials",
                        "client_id": credentials.client_id,
                        "client_secret": credentials.secret,
                    },
                )
                answer.raise_for_status()
            body = answer.json()
            token = str(body["access_token"])
            lifetime = float(body.get("expires_in", 300))
            self._cache[tenant] = (token, time.monotonic() + lifetime * _RENEW_AT)
            return token

    async def token_or_none(self, tenant: str) -> str | None:
        """A token of ``tenant``, or None (logged) when there are no credentials for it or
        identity will not issue one: for callers that carry on without (a mail not sent)."""
        if not self.has_tenant(tenant):
            return None
        try:
            return await self.token(tenant)
        except MainstayError as exc:
            _log.warning("no token of tenant %s from identity: %s", tenant, exc)
            return None

    async def aclose(self) -> None:
        await self._http.aclose()
