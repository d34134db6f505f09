"""The identity use-cases: register principals, issue tokens, rotate keys.

Token requests fail with :class:`OAuthError`, which carries the RFC 6749
error code and HTTP status the token endpoint answers with.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from mainstay_common.auth import TokenVerifier, scope_grants
from mainstay_common.errors import InvalidArgument, NotFound, Unauthenticated
from mainstay_identity.domain_card import sign_card

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import timedelta

    from mainstay_identity.store.events import CredentialLog
    from mainstay_identity.store.keys import KeyStore
    from mainstay_identity.store.principals import PrincipalRecord, PrincipalStore
    from mainstay_identity.store.revocations import RevocationStore

__all__ = [
    "ACCESS_TOKEN_TYPE",
    "EXCHANGE_GRANT",
    "IdentityService",
    "OAuthError",
    "TokenAnswer",
    "parse_client_id",
]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$")
_FAILURE_WINDOW_S = 60.0
EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"  # noqa: S105 - a URN
SUBJECT_TOKEN_TYPES = frozenset({ACCESS_TOKEN_TYPE, "urn:ietf:params:oauth:token-type:jwt"})


class OAuthError(Exception):
    """An RFC 6749 error: ``error`` code, description, HTTP status."""

    def __init__(
        self, error: str, description: str, *, status: int = 400, retry_after_s: int | None = None
    ) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class TokenAnswer:
    access_token: str
    expires_in: int
    scope: str
    token_type: str = "Bearer"  # noqa: S105 - the RFC 6749 token type, not a secret
    issued_token_type: str = ""


def check_name(label: str, value: str) -> str:
    if not _NAME.match(value):
        raise InvalidArgument(
            f"{label} {value!r} must be 1-128 letters, digits or . _ @ - (starting with a"
            " letter or digit)"
        )
    return value


def parse_client_id(client_id: str) -> tuple[str, str]:
    """``<tenant>/<name>`` → ``(tenant, name)``; :class:`OAuthError` when malformed."""
    tenant, sep, name = client_id.partition("/")
    if not sep or not _NAME.match(tenant) or not _NAME.match(name):
        raise OAuthError("invalid_client", "client_id must look like '<tenant>/<name>'", status=401)
    return tenant, name


def narrow(granted: Sequence[str], requested: str | None) -> list[str]:
    """The requested scopes (all granted ones when none are asked for); never wider."""
    if requested is None or not requested.strip():
        return sorted(granted)
    asked = requested.split()
    missing = [s for s in asked if s not in granted]
    if missing:
        raise OAuthError("invalid_scope", f"not granted to this client: {' '.join(missing)}")
    return sorted(set(asked))


class IdentityService:
    def __init__(
        self,
        *,
        principals: PrincipalStore,
        keys: KeyStore,
        log: CredentialLog,
        revocations: RevocationStore,
        token_ttl: timedelta,
        failed_attempts_per_minute: int,
        issuer: str,
        audience: str,
    ) -> None:
        self.revocations = revocations
        self._issuer = issuer
        self.principals = principals
        self.keys = keys
        self.log = log
        self._ttl = token_ttl
        self._max_failures = failed_attempts_per_minute
        # Subject tokens must be this service's own, checked against its own keys.
        self._own_tokens = TokenVerifier(
            keys, issuer=issuer, audience=audience, is_revoked=revocations.is_revoked
        )

    async def client_credentials(
        self, client_id: str, client_secret: str, scope: str | None
    ) -> TokenAnswer:
        """RFC 6749 §4.4: a token for the client itself."""
        principal = await self._authenticate(client_id, client_secret)
        return await self._issue(
            subject=principal.name,
            tenant=principal.tenant,
            scopes=narrow(principal.scopes, scope),
            ttl=self._ttl,
            audit=(principal.name, "issued", ""),
        )

    async def exchange(
        self,
        client_id: str,
        client_secret: str,
        *,
        subject_token: str,
        subject_token_type: str,
        scope: str | None,
    ) -> TokenAnswer:
        """RFC 8693: the authenticated agent gets a token to act for the subject token's owner.

        The new token's ``sub`` is the subject's, its ``act`` names the agent
        (then whoever the subject token already named), its scopes are those
        both the subject token and the agent hold (narrowed further by
        ``scope``), and it never outlives the subject token.
        """
        agent = await self._authenticate(client_id, client_secret)
        if subject_token_type not in SUBJECT_TOKEN_TYPES:
            raise OAuthError(
                "invalid_request",
                f"subject_token_type must be one of {', '.join(sorted(SUBJECT_TOKEN_TYPES))}",
            )
        try:
            subject = await self._own_tokens.verify(subject_token)
        except Unauthenticated as exc:
            raise OAuthError("invalid_grant", f"subject_token: {exc.message}") from exc
        if subject.tenant != agent.tenant:
            raise OAuthError("invalid_grant", "subject_token belongs to another tenant")
        both = {s for s in subject.scopes if any(scope_grants(g, s) for g in agent.scopes)}
        both |= {s for s in agent.scopes if subject.has_scope(s)}
        scopes = narrow(sorted(both), scope)
        return await self._issue(
            subject=subject.subject,
            tenant=subject.tenant,
            scopes=scopes,
            ttl=min(self._ttl, subject.expires_at - datetime.now(UTC)),
            actor_chain=(agent.name, *subject.actor_chain),
            audit=(agent.name, "exchanged", f"for {subject.subject} (token {subject.token_id})"),
            issued_token_type=ACCESS_TOKEN_TYPE,
        )

    async def _authenticate(self, client_id: str, client_secret: str) -> PrincipalRecord:
        """The client, by its secret; failures are audited and rate limited."""
        tenant, name = parse_client_id(client_id)
        failures = await self.log.recent_failures(
            tenant=tenant, principal=name, within_s=_FAILURE_WINDOW_S
        )
        if failures >= self._max_failures:
            raise OAuthError(
                "invalid_client",
                "too many failed attempts for this client; try again in a minute",
                status=429,
                retry_after_s=int(_FAILURE_WINDOW_S),
            )
        principal = await self.principals.authenticate(tenant, name, client_secret)
        if principal is None:
            await self.log.record(
                tenant=tenant, principal=name, event="failed", detail="client_credentials"
            )
            raise OAuthError("invalid_client", "client authentication failed", status=401)
        return principal

    async def _issue(
        self,
        *,
        subject: str,
        tenant: str,
        scopes: list[str],
        ttl: timedelta,
        audit: tuple[str, str, str],
        actor_chain: tuple[str, ...] = (),
        issued_token_type: str = "",
    ) -> TokenAnswer:
        """Sign a token and audit it as ``(principal, event, detail)``."""
        signer = await self.keys.signer()
        token_id = uuid.uuid4().hex
        token = signer.mint(
            subject=subject,
            tenant=tenant,
            scopes=scopes,
            ttl=ttl,
            actor_chain=actor_chain,
            token_id=token_id,
        )
        principal, event, detail = audit
        await self.log.record(
            tenant=tenant,
            principal=principal,
            event=event,
            jti=token_id,
            detail=f"{detail} kid={signer.kid} scope={' '.join(scopes)}".strip(),
        )
        return TokenAnswer(
            access_token=token,
            expires_in=max(0, int(ttl.total_seconds())),
            scope=" ".join(scopes),
            issued_token_type=issued_token_type,
        )

    async def rotate_keys(self, *, by: str, tenant: str) -> tuple[str, str]:
        old, new = await self.keys.rotate()
        await self.log.record(
            tenant=tenant, principal=by, event="rotated", detail=f"{old or '-'} -> {new}"
        )
        return old, new

    async def revoke(self, *, tenant: str, jti: str, client: str, reason: str, by: str) -> int:
        """Revoke one token (``jti``) or a client (every token of it or acting for it so far;
        the client is also disabled until an administrator enables it again)."""
        if bool(jti) == bool(client):
            raise InvalidArgument("give exactly one of 'jti' and 'client'")
        if client:
            record = await self.principals.get(tenant, client)
            if record is None:
                raise NotFound(f"tenant '{tenant}' has no principal '{client}'")
            await self.principals.put(
                tenant=tenant,
                name=client,
                kind=record.kind,
                owner=record.owner,
                description=record.description,
                scopes=record.scopes,
                disabled=True,
                email=record.email,
            )
        revocation = await self.revocations.revoke(
            tenant=tenant,
            kind="jti" if jti else "client",
            value=jti or client,
            reason=reason,
            by=by,
        )
        await self.log.record(
            tenant=tenant,
            principal=client or by,
            event="revoked",
            jti=jti,
            detail=f"{'client ' + client if client else 'token'} by {by}: {reason}",
        )
        return revocation

    async def agent_card(self, tenant: str, name: str, *, base_url: str) -> dict[str, Any]:
        """The signed A2A-style card of an enabled agent."""
        record = await self.principals.get(tenant, name)
        if record is None or record.kind != "agent" or record.disabled:
            raise NotFound(f"tenant '{tenant}' has no agent '{name}'")
        card = {
            "id": f"{tenant}/{name}",
            "name": name,
            "description": record.description,
            "provider": {"organization": tenant},
            "owner": record.owner,
            "capabilities": {"scopes": sorted(record.scopes)},
            "authentication": {
                "schemes": ["oauth2-client-credentials"],
                "token_url": f"{base_url}/oauth/token",
                "jwks_url": f"{base_url}/.well-known/jwks.json",
            },
            "issuer": self._issuer,
        }
        return sign_card(card, await self.keys.signer())
