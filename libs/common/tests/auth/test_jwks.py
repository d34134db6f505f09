"""The JWKS cache against a real HTTP server on 127.0.0.1:0: refresh, rate limit, outages."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response

from mainstay_common.auth import (
    JwksCache,
    RevocationFeed,
    TokenSigner,
    TokenVerifier,
    client_digest,
)
from mainstay_common.errors import DependencyTimeout, DependencyUnavailable, Unauthenticated
from mainstay_common.http import HttpServer

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


@dataclass
class JwksEndpoint:
    """What the fake identity service publishes, and how often it was asked."""

    url: str = ""
    signers: list[TokenSigner] = field(default_factory=list)
    hits: int = 0
    status: int = 200
    body: bytes | None = None
    delay_s: float = 0.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
async def _server() -> AsyncIterator[JwksEndpoint]:
    # One server for the module (each start/stop costs ~0.2 s); tests reset its state.
    state = JwksEndpoint()
    app = FastAPI()

    @app.get("/.well-known/jwks.json")
    async def jwks() -> Response:
        state.hits += 1
        if state.delay_s:
            await asyncio.sleep(state.delay_s)
        if state.body is not None:
            return Response(state.body, status_code=state.status)
        keys: dict[str, Any] = {"keys": [s.public_jwk() for s in state.signers]}
        return JSONResponse(keys, status_code=state.status)

    async with HttpServer(app, shutdown_timeout_s=2.0) as server:
        state.url = f"{server.url}/.well-known/jwks.json"
        yield state


@pytest.fixture
def endpoint(_server: JwksEndpoint) -> JwksEndpoint:
    _server.signers = [TokenSigner.generate()]
    _server.hits, _server.status, _server.body, _server.delay_s = 0, 200, None, 0.0
    return _server


def _verifier(cache: JwksCache) -> TokenVerifier:
    return TokenVerifier(cache, issuer="mainstay-identity", audience="mainstay")


def _token(signer: TokenSigner) -> str:
    return signer.mint(subject="agent", tenant="acme", scopes=["memory:read"])


async def test_keys_are_fetched_once_and_served_from_cache(endpoint: JwksEndpoint) -> None:
    verifier = _verifier(JwksCache(endpoint.url))

    for _ in range(5):
        assert (await verifier.verify(_token(endpoint.signers[0]))).subject == "agent"

    assert endpoint.hits == 1


async def test_concurrent_first_calls_wait_for_the_one_load(endpoint: JwksEndpoint) -> None:
    # A burst of requests right after start: one fetch, and none of them is refused.
    endpoint.delay_s = 0.2
    verifier = _verifier(JwksCache(endpoint.url, refresh_min_interval_s=10))
    tokens = [_token(endpoint.signers[0]) for _ in range(20)]

    principals = await asyncio.gather(*(verifier.verify(t) for t in tokens))

    assert [p.subject for p in principals] == ["agent"] * 20
    assert endpoint.hits == 1


async def test_a_rotated_key_is_picked_up_on_its_first_token(endpoint: JwksEndpoint) -> None:
    clock = Clock()
    verifier = _verifier(JwksCache(endpoint.url, refresh_min_interval_s=10, clock=clock))
    await verifier.verify(_token(endpoint.signers[0]))
    rotated = TokenSigner.generate()
    endpoint.signers.append(rotated)
    clock.now += 10

    assert (await verifier.verify(_token(rotated))).subject == "agent"
    assert endpoint.hits == 2


async def test_a_flood_of_unknown_kids_costs_at_most_one_fetch_per_interval(
    endpoint: JwksEndpoint,
) -> None:
    clock = Clock()
    verifier = _verifier(JwksCache(endpoint.url, refresh_min_interval_s=30, clock=clock))
    await verifier.verify(_token(endpoint.signers[0]))

    async def attempt() -> None:
        with pytest.raises(Unauthenticated, match="unknown key"):
            await verifier.verify(_token(TokenSigner.generate(kid=uuid.uuid4().hex)))

    await asyncio.gather(*(attempt() for _ in range(50)))
    assert endpoint.hits == 1  # the initial load; every bad kid fell inside the interval

    clock.now += 30
    await asyncio.gather(*(attempt() for _ in range(50)))
    assert endpoint.hits == 2  # one refresh shared by all concurrent callers


async def test_expired_cache_is_refreshed(endpoint: JwksEndpoint) -> None:
    clock = Clock()
    cache = JwksCache(endpoint.url, cache_s=300, refresh_min_interval_s=10, clock=clock)
    verifier = _verifier(cache)
    await verifier.verify(_token(endpoint.signers[0]))
    clock.now += 301

    await verifier.verify(_token(endpoint.signers[0]))

    assert endpoint.hits == 2


async def test_an_identity_outage_keeps_the_cached_keys(endpoint: JwksEndpoint) -> None:
    clock = Clock()
    verifier = _verifier(JwksCache(endpoint.url, cache_s=300, clock=clock))
    await verifier.verify(_token(endpoint.signers[0]))
    endpoint.status = 503
    clock.now += 301

    assert (await verifier.verify(_token(endpoint.signers[0]))).subject == "agent"
    assert endpoint.hits == 2


async def test_no_keys_ever_is_an_outage_and_is_rate_limited(endpoint: JwksEndpoint) -> None:
    clock = Clock()
    endpoint.status = 503
    verifier = _verifier(JwksCache(endpoint.url, refresh_min_interval_s=10, clock=clock))

    with pytest.raises(DependencyUnavailable, match="cannot fetch JWKS"):
        await verifier.verify(_token(endpoint.signers[0]))
    with pytest.raises(DependencyUnavailable, match="is unavailable") as caught:
        await verifier.verify(_token(endpoint.signers[0]))

    assert caught.value.retryable
    assert caught.value.retry_after == 10
    assert endpoint.hits == 1


async def test_a_slow_jwks_endpoint_times_out(endpoint: JwksEndpoint) -> None:
    endpoint.delay_s = 1.0
    verifier = _verifier(JwksCache(endpoint.url, timeout_s=0.1))

    with pytest.raises(DependencyTimeout, match="timed out fetching JWKS"):
        await verifier.verify(_token(endpoint.signers[0]))


@pytest.mark.parametrize("body", [b"<html>", b'{"no": "keys"}', b"[]"])
async def test_an_invalid_document_is_an_outage(endpoint: JwksEndpoint, body: bytes) -> None:
    endpoint.body = body
    cache = JwksCache(endpoint.url)

    with pytest.raises(DependencyUnavailable, match="invalid JWKS"):
        await cache.refresh()


async def test_keys_of_other_types_are_skipped(endpoint: JwksEndpoint) -> None:
    good = endpoint.signers[0].public_jwk()
    others = [
        {"kty": "RSA", "kid": "rsa", "n": "xyz", "e": "AQAB"},
        {**good, "kid": "enc", "use": "enc"},
        {**good, "kid": "hs", "alg": "HS256"},
        {"kty": "OKP", "crv": "X25519", "kid": "x", "x": good["x"]},
        "not-an-object",
    ]
    endpoint.body = json.dumps({"keys": [*others, good]}).encode()
    cache = JwksCache(endpoint.url)

    await cache.refresh()

    assert cache.kids == {good["kid"]}


async def test_the_revocation_feed_is_polled_and_an_outage_keeps_what_is_known(
    endpoint: JwksEndpoint,
) -> None:
    app = FastAPI()
    state: dict[str, Any] = {"entries": [], "status": 200, "hits": 0}

    @app.get("/v1/revocations")
    async def feed(after: int = 0) -> Response:
        state["hits"] += 1
        entries = [e for e in state["entries"] if e["id"] > after]
        return JSONResponse({"revocations": entries}, status_code=state["status"])

    async with (
        HttpServer(app, shutdown_timeout_s=2.0) as server,
        contextlib.aclosing(
            RevocationFeed(f"{server.url}/v1/revocations", poll_s=0.0)
        ) as revocations,
    ):
        verifier = TokenVerifier(
            JwksCache(endpoint.url),
            issuer="mainstay-identity",
            audience="mainstay",
            is_revoked=revocations.is_revoked,
        )
        signer = endpoint.signers[0]
        kept = signer.mint(subject="agent", tenant="acme", scopes=[], token_id="kept")
        dropped = signer.mint(subject="agent", tenant="acme", scopes=[], token_id="dropped")
        other = signer.mint(subject="other", tenant="acme", scopes=[])
        assert (await verifier.verify(dropped)).token_id == "dropped"

        state["entries"] = [
            {"id": 1, "jti": "dropped"},
            {"id": 2, "client_digest": client_digest("acme", "other"), "revoked_at_epoch": 4e9},
        ]
        for token in (dropped, other):
            with pytest.raises(Unauthenticated, match="token has been revoked"):
                await verifier.verify(token)
        assert (await verifier.verify(kept)).token_id == "kept"

        state["status"] = 503  # the identity service is away: what is known still applies
        with pytest.raises(Unauthenticated, match="token has been revoked"):
            await verifier.verify(dropped)
        assert (await verifier.verify(kept)).token_id == "kept"
        assert state["hits"] >= 4
