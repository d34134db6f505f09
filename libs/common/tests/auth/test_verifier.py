"""Token verification with real Ed25519 keys: what passes, what fails, and why."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import jwt
import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from mainstay_common.auth import (
    JwksCache,
    Principal,
    TokenSigner,
    TokenVerifier,
    parse_bearer,
)
from mainstay_common.errors import DependencyUnavailable, Unauthenticated
from mainstay_common.settings import AuthSettings

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path


def _claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": "mainstay-identity",
        "aud": "mainstay",
        "sub": "agent-7",
        "tenant": "acme",
        "scope": "memory:read memory:write",
        "jti": "token-1",
        "iat": now,
        "nbf": now,
        "exp": now + 600,
    }
    claims.update(overrides)
    return {key: value for key, value in claims.items() if value is not None}


async def _reason(verifier: TokenVerifier, token: str) -> str:
    with pytest.raises(Unauthenticated) as caught:
        await verifier.verify(token)
    assert not token or token not in caught.value.message
    return caught.value.message


async def test_a_valid_token_yields_its_principal(
    verifier: TokenVerifier, signer: TokenSigner
) -> None:
    token = signer.mint(subject="agent-7", tenant="acme", scopes=["memory:read", "tools:call"])

    principal = await verifier.verify(token)

    assert principal.subject == "agent-7"
    assert principal.tenant == "acme"
    assert principal.scopes == frozenset({"memory:read", "tools:call"})
    assert principal.actor_chain == ()
    assert principal.expires_at > datetime.now(UTC)
    assert principal.claims["iss"] == "mainstay-identity"
    assert len(principal.token_id) == 32


async def test_the_act_chain_lists_the_current_actor_first(
    verifier: TokenVerifier, signer: TokenSigner
) -> None:
    token = signer.mint(
        subject="user-alice",
        tenant="acme",
        scopes=["memory:read"],
        actor_chain=["agent-planner", "agent-router"],
    )

    principal = await verifier.verify(token)

    assert principal.subject == "user-alice"
    assert principal.actor_chain == ("agent-planner", "agent-router")
    assert principal.actor == "agent-planner"
    assert principal.claims["act"] == {"sub": "agent-planner", "act": {"sub": "agent-router"}}


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"exp": int(time.time()) - 60}, "token has expired"),
        ({"aud": "someone-else"}, "token audience does not include 'mainstay'"),
        ({"iss": "evil-identity"}, "token issuer is not 'mainstay-identity'"),
        ({"nbf": int(time.time()) + 3600}, "token is not yet valid"),
        ({"iat": int(time.time()) + 3600}, "token is not yet valid"),
    ],
    ids=["expired", "wrong-audience", "wrong-issuer", "not-before", "issued-in-future"],
)
async def test_time_audience_and_issuer_are_enforced(
    verifier: TokenVerifier, signer: TokenSigner, overrides: dict[str, Any], reason: str
) -> None:
    assert reason in await _reason(verifier, signer.sign(_claims(**overrides)))


async def test_leeway_tolerates_small_clock_skew(
    verifier: TokenVerifier, signer: TokenSigner
) -> None:
    token = signer.sign(_claims(exp=int(time.time()) - 2))  # leeway is 5 s

    assert (await verifier.verify(token)).subject == "agent-7"


@pytest.mark.parametrize("claim", ["sub", "tenant", "scope", "jti", "exp", "iat", "iss", "aud"])
async def test_every_required_claim_is_required(
    verifier: TokenVerifier, signer: TokenSigner, claim: str
) -> None:
    token = signer.sign(_claims(**{claim: None}))

    assert f"missing the required '{claim}' claim" in await _reason(verifier, token)


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"scope": ["memory:read"]}, "'scope' must be a space-separated string"),
        ({"tenant": ""}, "'tenant' must be a non-empty string"),
        ({"act": {"client": "x"}}, "'act' claim must be an object with a 'sub'"),
    ],
)
async def test_malformed_claims_are_rejected(
    verifier: TokenVerifier, signer: TokenSigner, overrides: dict[str, Any], reason: str
) -> None:
    assert reason in await _reason(verifier, signer.sign(_claims(**overrides)))


async def test_hs256_with_the_public_key_as_secret_is_rejected(
    verifier: TokenVerifier, signer: TokenSigner, forge: Callable[..., str]
) -> None:
    # The classic algorithm-confusion attack: HMAC keyed with the published key.
    public = signer.private_key.public_key()
    for secret in (
        public.public_bytes(Encoding.Raw, PublicFormat.Raw),
        public.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo),
    ):
        header = {"alg": "HS256", "typ": "JWT", "kid": signer.kid}
        unsigned = forge(header, _claims()).rsplit(".", 1)[0]
        mac = hmac.new(secret, unsigned.encode(), hashlib.sha256).digest()
        token = forge(header, _claims(), mac)

        assert "algorithm 'HS256' is not accepted" in await _reason(verifier, token)


@pytest.mark.parametrize("alg", ["none", "None", "RS256", "ES256"])
async def test_other_algorithms_are_rejected(
    verifier: TokenVerifier, signer: TokenSigner, forge: Callable[..., str], alg: str
) -> None:
    token = forge({"alg": alg, "kid": signer.kid}, _claims())

    assert f"algorithm '{alg}' is not accepted" in await _reason(verifier, token)


async def test_a_token_signed_by_another_key_with_our_kid_is_rejected(
    verifier: TokenVerifier, signer: TokenSigner
) -> None:
    impostor = TokenSigner.generate(kid=signer.kid)

    assert "signature is invalid" in await _reason(verifier, impostor.sign(_claims()))


async def test_a_tampered_payload_is_rejected(
    verifier: TokenVerifier, signer: TokenSigner, forge: Callable[..., str]
) -> None:
    header, _, signature = signer.sign(_claims()).split(".")
    tampered_body = forge({}, _claims(tenant="other-tenant")).split(".")[1]

    reason = await _reason(verifier, f"{header}.{tampered_body}.{signature}")

    assert "signature is invalid" in reason


@pytest.mark.parametrize("token", ["", "not-a-jwt", "a.b.c", "x" * 10_000])
async def test_garbage_is_rejected_without_echoing_it(verifier: TokenVerifier, token: str) -> None:
    reason = await _reason(verifier, token)

    assert reason.startswith(("malformed token", "token is too large"))


async def test_an_unknown_kid_is_rejected_until_the_jwks_publishes_it(
    verifier: TokenVerifier,
    signer: TokenSigner,
    jwks_path: Path,
    write_jwks: Callable[..., None],
) -> None:
    await verifier.verify(signer.mint(subject="a", tenant="t", scopes=[]))  # cache loaded
    rotated = TokenSigner.generate()
    token = rotated.mint(subject="a", tenant="t", scopes=[])

    assert f"unknown key '{rotated.kid}'" in await _reason(verifier, token)

    write_jwks(jwks_path, signer, rotated)  # identity publishes the new key

    assert (await verifier.verify(token)).subject == "a"
    assert verifier.keys.kids == {signer.kid, rotated.kid}


async def test_a_missing_kid_is_rejected(verifier: TokenVerifier, signer: TokenSigner) -> None:
    token = jwt.encode(_claims(), signer.private_key, algorithm="EdDSA")

    assert "no key id" in await _reason(verifier, token)


async def test_the_revocation_hook_sees_the_principal(jwks_path: Path, signer: TokenSigner) -> None:
    seen: list[Principal] = []

    async def is_revoked(principal: Principal) -> bool:
        seen.append(principal)
        return principal.token_id == "revoked-jti"

    verifier = TokenVerifier(
        JwksCache(jwks_path), issuer="mainstay-identity", audience="mainstay", is_revoked=is_revoked
    )
    ok = signer.mint(subject="a", tenant="t", scopes=[], token_id="fine-jti")
    revoked = signer.mint(subject="a", tenant="t", scopes=[], token_id="revoked-jti")

    assert (await verifier.verify(ok)).token_id == "fine-jti"
    assert await _reason(verifier, revoked) == "token has been revoked"
    assert [p.token_id for p in seen] == ["fine-jti", "revoked-jti"]


async def test_no_loadable_jwks_is_an_outage_not_a_bad_token(tmp_path: Path) -> None:
    verifier = TokenVerifier(
        JwksCache(tmp_path / "missing.json"), issuer="mainstay-identity", audience="mainstay"
    )
    token = TokenSigner.generate().mint(subject="a", tenant="t", scopes=[])

    with pytest.raises(DependencyUnavailable, match="cannot read JWKS file"):
        await verifier.verify(token)


async def test_from_settings_verifies_a_token_minted_with_the_defaults(
    jwks_path: Path, signer: TokenSigner
) -> None:
    verifier = TokenVerifier.from_settings(AuthSettings(jwks_file=str(jwks_path), jwks_url=None))
    token = signer.mint(
        subject="a", tenant="t", scopes=["*"], ttl=timedelta(minutes=1), now=datetime.now(UTC)
    )

    assert (await verifier.verify(token)).scopes == {"*"}


def test_from_settings_needs_a_jwks_source() -> None:
    with pytest.raises(ValueError, match="jwks_url or jwks_file"):
        TokenVerifier.from_settings(AuthSettings(jwks_file=None, jwks_url=None))


@pytest.mark.parametrize(
    ("header", "expected"),
    [("Bearer abc", "abc"), ("bearer   abc ", "abc"), ("BEARER abc", "abc")],
)
def test_parse_bearer_accepts_any_case(header: str, expected: str) -> None:
    assert parse_bearer(header) == expected


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (None, "missing bearer token"),
        ("", "missing bearer token"),
        ("Bearer ", "missing bearer token"),
        ("Basic dXNlcjpwYXNz", "must use the Bearer scheme"),
    ],
)
def test_parse_bearer_rejects_other_schemes(header: str | None, reason: str) -> None:
    with pytest.raises(Unauthenticated, match=reason):
        parse_bearer(header)


async def test_a_remembered_token_still_fails_once_its_key_is_withdrawn(
    tmp_path: Path, signer: TokenSigner, write_jwks: Callable[..., None]
) -> None:
    other = TokenSigner.generate()
    path = tmp_path / "jwks.json"
    write_jwks(path, signer, other)
    verifier = TokenVerifier(
        JwksCache(path, cache_s=0.0, refresh_min_interval_s=0.0),
        issuer="mainstay-identity",
        audience="mainstay",
    )
    token = signer.mint(subject="a", tenant="t", scopes=["x"])
    assert (await verifier.verify(token)).subject == "a"
    assert (await verifier.verify(token)).subject == "a"  # answered from memory

    write_jwks(path, other)  # the identity service withdraws the key

    assert f"unknown key '{signer.kid}'" in await _reason(verifier, token)


async def test_a_remembered_token_expires_and_stays_subject_to_revocation(
    jwks_path: Path, signer: TokenSigner
) -> None:
    revoked: set[str] = set()

    async def is_revoked(principal: Principal) -> bool:
        return principal.token_id in revoked

    verifier = TokenVerifier(
        JwksCache(jwks_path),
        issuer="mainstay-identity",
        audience="mainstay",
        leeway_s=0.0,
        is_revoked=is_revoked,
    )
    short = signer.mint(subject="a", tenant="t", scopes=[], ttl=timedelta(seconds=2))
    assert (await verifier.verify(short)).subject == "a"
    revoked.add((await verifier.verify(short)).token_id)
    assert await _reason(verifier, short) == "token has been revoked"
    revoked.clear()
    await asyncio.sleep(2.1)
    assert await _reason(verifier, short) == "token has expired"
