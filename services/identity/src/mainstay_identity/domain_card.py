"""A2A-style agent cards, signed with the identity service's key (detached JWS).

The card is JSON; its ``signatures`` hold one JWS (RFC 7515, JSON
serialization with a detached payload): ``protected`` is the base64url of
``{"alg": "EdDSA", "kid": ..., "typ": "JOSE"}`` and ``signature`` signs
``protected + "." + base64url(canonical card)``, where the canonical card is
the card without ``signatures``, serialised with sorted keys and no spaces
(RFC 8785 for the values a card holds). Anyone with the JWKS can check it.
"""

from __future__ import annotations

import base64
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mainstay_common.auth import TokenSigner

__all__ = ["canonical", "sign_card", "signing_input"]


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def canonical(card: dict[str, Any]) -> bytes:
    body = {k: v for k, v in card.items() if k != "signatures"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def signing_input(protected: str, card: dict[str, Any]) -> bytes:
    return f"{protected}.{_b64url(canonical(card))}".encode()


def sign_card(card: dict[str, Any], signer: TokenSigner) -> dict[str, Any]:
    header = {"alg": "EdDSA", "kid": signer.kid, "typ": "JOSE"}
    protected = _b64url(json.dumps(header, separators=(",", ":")).encode())
    signature = signer.private_key.sign(signing_input(protected, card))
    return {**card, "signatures": [{"protected": protected, "signature": _b64url(signature)}]}
