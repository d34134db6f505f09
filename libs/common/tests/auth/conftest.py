"""Real keys, real tokens: every auth test signs with a freshly generated Ed25519 key."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest

from mainstay_common.auth import JwksCache, TokenSigner, TokenVerifier
from mainstay_common.auth._jwk import b64url_encode

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path


def _write_jwks(path: Path, *signers: TokenSigner) -> None:
    path.write_text(json.dumps({"keys": [signer.public_jwk() for signer in signers]}))


def _forge(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    head = b64url_encode(json.dumps(header).encode())
    body = b64url_encode(json.dumps(claims).encode())
    return f"{head}.{body}.{b64url_encode(signature)}"


@pytest.fixture
def write_jwks() -> Callable[..., None]:
    """``write_jwks(path, *signers)`` publishes those signers' keys at ``path``."""
    return _write_jwks


@pytest.fixture
def forge() -> Callable[..., str]:
    """``forge(header, claims, signature)``: a compact JWS built by hand, for tokens
    no honest library would produce (``alg: none``, HMAC with the public key)."""
    return _forge


@pytest.fixture
def signer() -> TokenSigner:
    return TokenSigner.generate()


@pytest.fixture
def jwks_path(tmp_path: Path, signer: TokenSigner) -> Path:
    path = tmp_path / "jwks.json"
    _write_jwks(path, signer)
    return path


@pytest.fixture
def verifier(jwks_path: Path) -> TokenVerifier:
    return TokenVerifier(
        JwksCache(jwks_path, refresh_min_interval_s=0.0),
        issuer="mainstay-identity",
        audience="mainstay",
        leeway_s=5.0,
    )
