"""Token verification: an EdDSA-signed JWT in, a :class:`Principal` out.

The algorithm is pinned to EdDSA on our side, never taken from the token, and
checked before any key is looked up: that closes algorithm confusion (``alg:
none``, or ``HS256`` with the public key used as an HMAC secret). Every failure
becomes :class:`Unauthenticated` with a message that says what is wrong and
never echoes the token; header values the caller controls are quoted and shortened.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

import jwt

from mainstay_common.auth._jwk import ALGORITHM
from mainstay_common.auth._jwks import JwksCache
from mainstay_common.auth._principal import Principal
from mainstay_common.auth._revocations import RevocationFeed
from mainstay_common.errors import Unauthenticated

if TYPE_CHECKING:
    import httpx
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from mainstay_common.settings import AuthSettings

__all__ = ["KeySource", "RevocationCheck", "TokenVerifier", "parse_bearer"]


class KeySource(Protocol):
    """Where public keys come from: a :class:`JwksCache`, or the identity service's own store."""

    async def get_key(self, kid: str) -> Ed25519PublicKey | None:
        """The key named ``kid``, or ``None`` when it is not published."""
        ...


RevocationCheck: TypeAlias = Callable[[Principal], Awaitable[bool]]
"""``is_revoked(principal) -> bool``: the identity service's revocation lookup."""

# Far above any token identity issues; stops a caller from making us parse megabytes.
_MAX_TOKEN_BYTES = 8192
# RFC 8693 chains are short in practice; a bound keeps a crafted token from recursing deep.
_MAX_ACTOR_DEPTH = 16
_REQUIRED = ("exp", "iat", "iss", "aud", "sub", "jti")
# Verified tokens remembered (least recently used first out); a few MB at most.
_CACHED_TOKENS = 4096


def _quote(value: object, limit: int = 64) -> str:
    text = str(value)
    return repr(text if len(text) <= limit else text[:limit] + "...")


def parse_bearer(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` value (RFC 6750)."""
    if not authorization or not authorization.strip():
        raise Unauthenticated("missing bearer token")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        raise Unauthenticated("authorization must use the Bearer scheme")
    token = token.strip()
    if not token:
        raise Unauthenticated("missing bearer token")
    return token


def _claim_error(exc: jwt.InvalidTokenError, *, issuer: str, audience: str) -> Unauthenticated:
    # First match wins, and several of these subclass DecodeError, so order matters.
    reasons: tuple[tuple[type[jwt.InvalidTokenError], str], ...] = (
        (jwt.InvalidSignatureError, "token signature is invalid"),
        (jwt.ExpiredSignatureError, "token has expired"),
        (jwt.ImmatureSignatureError, "token is not yet valid (nbf or iat is in the future)"),
        (jwt.InvalidAudienceError, f"token audience does not include '{audience}'"),
        (jwt.InvalidIssuerError, f"token issuer is not '{issuer}'"),
        (jwt.InvalidAlgorithmError, f"token algorithm is not accepted; only {ALGORITHM} is"),
    )
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return Unauthenticated(f"token is missing the required '{exc.claim}' claim")
    for kind, reason in reasons:
        if isinstance(exc, kind):
            return Unauthenticated(reason)
    if isinstance(exc, jwt.DecodeError):
        return Unauthenticated(f"malformed token: {exc}")
    return Unauthenticated(f"invalid token: {exc}")


def _actor_chain(claims: dict[str, Any]) -> tuple[str, ...]:
    chain: list[str] = []
    act = claims.get("act")
    while act is not None:
        if len(chain) >= _MAX_ACTOR_DEPTH:
            raise Unauthenticated(f"token 'act' chain is deeper than {_MAX_ACTOR_DEPTH}")
        if not isinstance(act, dict) or not isinstance(act.get("sub"), str) or not act["sub"]:
            raise Unauthenticated("token 'act' claim must be an object with a 'sub' string")
        chain.append(act["sub"])
        act = act.get("act")
    return tuple(chain)


def _principal(claims: dict[str, Any]) -> Principal:
    for name in ("sub", "tenant", "jti"):
        if not isinstance(claims.get(name), str) or not claims[name]:
            if name not in claims:
                raise Unauthenticated(f"token is missing the required '{name}' claim")
            raise Unauthenticated(f"token claim '{name}' must be a non-empty string")
    if "scope" not in claims:
        raise Unauthenticated("token is missing the required 'scope' claim")
    if not isinstance(claims["scope"], str):
        raise Unauthenticated("token claim 'scope' must be a space-separated string")
    return Principal(
        subject=claims["sub"],
        tenant=claims["tenant"],
        scopes=frozenset(claims["scope"].split()),
        token_id=claims["jti"],
        expires_at=datetime.fromtimestamp(int(claims["exp"]), tz=UTC),
        actor_chain=_actor_chain(claims),
        claims=claims,
    )


class TokenVerifier:
    """Verifies Mainstay access tokens against the identity service's JWKS.

    ``is_revoked`` is an optional async hook (the identity service provides one
    backed by its revocation list); it runs only for otherwise valid tokens.
    """

    def __init__(
        self,
        keys: KeySource,
        *,
        issuer: str,
        audience: str,
        leeway_s: float = 5.0,
        is_revoked: RevocationCheck | None = None,
    ) -> None:
        self.keys = keys
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway_s
        self._is_revoked = is_revoked
        self._feed: RevocationFeed | None = None
        # token -> (principal, kid, the key object that verified it); see _cached().
        self._verified: OrderedDict[str, tuple[Principal, str, object]] = OrderedDict()

    @classmethod
    def from_settings(
        cls,
        settings: AuthSettings,
        *,
        is_revoked: RevocationCheck | None = None,
        http_client: httpx.AsyncClient | None = None,
        refresh_min_interval_s: float = 10.0,
    ) -> TokenVerifier:
        """A verifier reading ``jwks_url`` when set, else ``jwks_file``; with
        ``revocations_url`` set (and no ``is_revoked`` given) it also refuses what the
        identity service revoked."""
        source: str | Path
        if settings.jwks_url:
            source = settings.jwks_url
        elif settings.jwks_file:
            source = Path(settings.jwks_file)
        else:
            raise ValueError("AuthSettings needs jwks_url or jwks_file")
        keys = JwksCache(
            source,
            cache_s=settings.jwks_cache_s,
            refresh_min_interval_s=refresh_min_interval_s,
            http_client=http_client,
        )
        feed = None
        if is_revoked is None and settings.revocations_url:
            feed = RevocationFeed(
                settings.revocations_url,
                poll_s=settings.revocations_poll_s,
                http_client=http_client,
            )
            is_revoked = feed.is_revoked
        verifier = cls(
            keys,
            issuer=settings.issuer,
            audience=settings.audience,
            leeway_s=settings.leeway_s,
            is_revoked=is_revoked,
        )
        verifier._feed = feed
        return verifier

    async def aclose(self) -> None:
        """Release what :meth:`from_settings` opened (the revocation feed's HTTP client)."""
        if self._feed is not None:
            await self._feed.aclose()

    async def verify_authorization(self, authorization: str | None) -> Principal:
        """Verify the token of an ``Authorization`` header (or gRPC metadata) value."""
        return await self.verify(parse_bearer(authorization))

    async def verify(self, token: str) -> Principal:
        """The principal of ``token``; :class:`Unauthenticated` when it is not acceptable.

        May raise :class:`DependencyUnavailable` when no JWKS was ever loadable:
        that is the verifier's outage, not the caller's fault.
        """
        if len(token) > _MAX_TOKEN_BYTES:
            raise Unauthenticated("token is too large")
        principal = await self._cached(token)
        if principal is None:
            principal = await self._verify_signed(token)
        if self._is_revoked is not None and await self._is_revoked(principal):
            raise Unauthenticated("token has been revoked")
        return principal

    async def _cached(self, token: str) -> Principal | None:
        """A principal this verifier already checked, while its key and its lifetime last.

        A caller presents the same token on every call; checking its signature
        again each time costs a third of a millisecond. The entry counts only
        while the JWKS still holds the very key that verified it (a rotated-out
        or replaced key sends the token through full verification again) and
        the token has not expired; revocation is checked on every call anyway.
        """
        entry = self._verified.get(token)
        if entry is None:
            return None
        principal, kid, key = entry
        expired = principal.expires_at.timestamp() + self._leeway <= time.time()
        if expired or await self.keys.get_key(kid) is not key:
            self._verified.pop(token, None)
            return None
        self._verified.move_to_end(token)
        return principal

    async def _verify_signed(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError as exc:
            raise Unauthenticated("malformed token") from exc
        alg = header.get("alg")
        if alg != ALGORITHM:
            raise Unauthenticated(f"token algorithm {_quote(alg)} is not accepted; only EdDSA is")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise Unauthenticated("token header has no key id (kid)")
        key = await self.keys.get_key(kid)
        if key is None:
            raise Unauthenticated(f"token is signed by an unknown key {_quote(kid)}")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": list(_REQUIRED)},
            )
        except jwt.InvalidTokenError as exc:
            raise _claim_error(exc, issuer=self._issuer, audience=self._audience) from exc
        principal = _principal(claims)
        self._verified[token] = (principal, kid, key)
        while len(self._verified) > _CACHED_TOKENS:
            self._verified.popitem(last=False)
        return principal
