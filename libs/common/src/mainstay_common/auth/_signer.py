"""Minting EdDSA tokens: the development credentials and tests sign with this.

The identity service is the only production issuer; it keeps its own key
management but can reuse :class:`TokenSigner` for the JOSE details. Issuer and
audience default to the :class:`AuthSettings` defaults (read from the settings
class, not repeated here), so a dev token verifies under default settings.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from mainstay_common.auth._jwk import ALGORITHM, jwk_thumbprint, public_jwk
from mainstay_common.settings import AuthSettings

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

__all__ = ["DEFAULT_AUDIENCE", "DEFAULT_ISSUER", "TokenSigner"]

DEFAULT_ISSUER: str = AuthSettings.model_fields["issuer"].default
DEFAULT_AUDIENCE: str = AuthSettings.model_fields["audience"].default


def _actor_claim(actor_chain: Sequence[str]) -> dict[str, Any] | None:
    claim: dict[str, Any] | None = None
    for subject in reversed(actor_chain):
        claim = {"sub": subject} if claim is None else {"sub": subject, "act": claim}
    return claim


class TokenSigner:
    """An Ed25519 private key with its ``kid``, issuing tokens for one issuer/audience.

    ``kid`` defaults to the key's RFC 7638 thumbprint, so the same key always
    gets the same id and rotation is just "a new key".
    """

    def __init__(
        self,
        private_key: Ed25519PrivateKey,
        *,
        kid: str | None = None,
        issuer: str = DEFAULT_ISSUER,
        audience: str = DEFAULT_AUDIENCE,
    ) -> None:
        self.private_key = private_key
        self.kid = kid or jwk_thumbprint(private_key.public_key())
        self.issuer = issuer
        self.audience = audience

    @classmethod
    def generate(cls, **kwargs: Any) -> TokenSigner:
        """A signer with a fresh key (tests, first dev start)."""
        return cls(Ed25519PrivateKey.generate(), **kwargs)

    @classmethod
    def from_pem(cls, pem: bytes, **kwargs: Any) -> TokenSigner:
        """A signer for a PKCS#8 PEM private key; ``ValueError`` unless it is Ed25519."""
        key = load_pem_private_key(pem, password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError("signing key is not an Ed25519 private key")
        return cls(key, **kwargs)

    def private_pem(self) -> bytes:
        """The private key as unencrypted PKCS#8 PEM (store it with mode 0600)."""
        return self.private_key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())

    def public_jwk(self) -> dict[str, str]:
        """The public key as an OKP JWK with ``kid``, ``alg: EdDSA`` and ``use: sig``."""
        return public_jwk(self.private_key.public_key(), self.kid)

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        """A JWKS document publishing only this key."""
        return {"keys": [self.public_jwk()]}

    def sign(self, claims: Mapping[str, Any]) -> str:
        """Sign exactly ``claims`` (no defaults added): tests use it to forge bad tokens."""
        return jwt.encode(
            dict(claims), self.private_key, algorithm=ALGORITHM, headers={"kid": self.kid}
        )

    def mint(
        self,
        *,
        subject: str,
        tenant: str,
        scopes: Iterable[str],
        ttl: timedelta = timedelta(minutes=15),
        actor_chain: Sequence[str] = (),
        token_id: str | None = None,
        now: datetime | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> str:
        """A complete access token; ``actor_chain`` becomes a nested RFC 8693 ``act``."""
        issued = (now or datetime.now(UTC)).replace(microsecond=0)
        claims: dict[str, Any] = {
            **(extra or {}),
            "iss": self.issuer,
            "aud": self.audience,
            "sub": subject,
            "tenant": tenant,
            "scope": " ".join(scopes),
            "jti": token_id or uuid.uuid4().hex,
            "iat": int(issued.timestamp()),
            "nbf": int(issued.timestamp()),
            "exp": int((issued + ttl).timestamp()),
        }
        act = _actor_claim(actor_chain)
        if act is not None:
            claims["act"] = act
        return self.sign(claims)
