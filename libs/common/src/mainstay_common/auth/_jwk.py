"""Ed25519 keys as JSON Web Keys (RFC 8037), shared by the signer and the verifier.

Only one key type exists in Mainstay: ``OKP``/``Ed25519`` used with ``EdDSA``. The
parser keeps exactly those keys and skips the rest instead of failing, so a JWKS
that also publishes, say, an RSA key for another consumer still works here; a key
that claims a different ``alg`` or a non-signing ``use`` is skipped for the same
reason and can never verify a Mainstay token.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

__all__ = [
    "ALGORITHM",
    "b64url_decode",
    "b64url_encode",
    "jwk_thumbprint",
    "parse_jwks",
    "public_jwk",
]

ALGORITHM = "EdDSA"

logger = logging.getLogger(__name__)


def b64url_encode(data: bytes) -> str:
    """Base64url without padding, as every JOSE structure spells binary data."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Inverse of :func:`b64url_encode`; raises ``ValueError`` on bad input."""
    padded = text + "=" * (-len(text) % 4)
    return base64.urlsafe_b64decode(padded.encode("ascii"))


def _raw_public_bytes(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def jwk_thumbprint(key: Ed25519PublicKey) -> str:
    """RFC 7638 thumbprint: a ``kid`` that is the same wherever the key is loaded."""
    members = {"crv": "Ed25519", "kty": "OKP", "x": b64url_encode(_raw_public_bytes(key))}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    return b64url_encode(hashlib.sha256(canonical).digest())


def public_jwk(key: Ed25519PublicKey, kid: str) -> dict[str, str]:
    """The public half of ``key`` as a JWK a JWKS document can publish."""
    return {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": b64url_encode(_raw_public_bytes(key)),
        "kid": kid,
        "alg": ALGORITHM,
        "use": "sig",
    }


def _parse_key(entry: Any) -> tuple[str, Ed25519PublicKey] | None:
    if not isinstance(entry, dict):
        return None
    kid, x = entry.get("kid"), entry.get("x")
    if (
        entry.get("kty") != "OKP"
        or entry.get("crv") != "Ed25519"
        or not isinstance(kid, str)
        or not kid
        or not isinstance(x, str)
        or entry.get("use", "sig") != "sig"
        or entry.get("alg", ALGORITHM) != ALGORITHM
    ):
        return None
    try:
        # Only ``x`` is read: a JWKS that leaks a private ``d`` still yields a
        # verification key, never a signing one.
        return kid, Ed25519PublicKey.from_public_bytes(b64url_decode(x))
    except ValueError:
        return None


def parse_jwks(document: Any) -> dict[str, Ed25519PublicKey]:
    """The usable Ed25519 keys of a JWKS document, by ``kid``.

    Raises ``ValueError`` when the document is not a JWKS at all (so the caller
    can keep its previous keys); unusable entries are skipped and logged.
    """
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWKS document: expected an object with a 'keys' list")
    keys: dict[str, Ed25519PublicKey] = {}
    for index, entry in enumerate(document["keys"]):
        parsed = _parse_key(entry)
        if parsed is None:
            logger.debug("skipping JWKS entry %d: not an Ed25519 signing key", index)
            continue
        keys[parsed[0]] = parsed[1]
    return keys
