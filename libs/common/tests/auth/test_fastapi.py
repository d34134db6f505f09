"""The FastAPI dependencies: in-process over ASGI, and once over a real uvicorn server."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import httpx
import pytest
from fastapi import Depends, FastAPI
from prometheus_client import CollectorRegistry

from mainstay_common.auth import (
    Principal,
    TokenSigner,
    TokenVerifier,
    attach_verifier,
    current_principal,
    require_principal,
    requires_scope,
)
from mainstay_common.http import HttpServer, create_http_app

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


def _add_routes(app: FastAPI) -> None:
    @app.get("/me")
    async def me(principal: Annotated[Principal, Depends(require_principal)]) -> dict[str, str]:
        return {"subject": principal.subject, "bound": current_principal().subject}

    @app.post("/memories")
    async def write(
        principal: Annotated[Principal, Depends(requires_scope("memory:write"))],
    ) -> dict[str, str]:
        return {"written_by": principal.subject}


@pytest.fixture
def app(verifier: TokenVerifier) -> FastAPI:
    app = create_http_app(
        title="t", version="0", metrics_registry=CollectorRegistry(), token_verifier=verifier
    )
    _add_routes(app)
    return app


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_a_valid_token_gives_the_route_its_principal(
    client: httpx.AsyncClient, signer: TokenSigner
) -> None:
    token = signer.mint(subject="agent-7", tenant="acme", scopes=[])

    response = await client.get("/me", headers=_auth(token))

    assert response.status_code == 200
    assert response.json() == {"subject": "agent-7", "bound": "agent-7"}


async def test_no_token_is_401_with_a_bare_challenge(client: httpx.AsyncClient) -> None:
    response = await client.get("/me")

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="mainstay"'
    assert response.json() == {
        "error": {"type": "Unauthenticated", "message": "missing bearer token"}
    }


async def test_a_bad_token_is_401_saying_why(
    client: httpx.AsyncClient, signer: TokenSigner
) -> None:
    other_audience = TokenSigner(signer.private_key, audience="elsewhere")
    token = other_audience.mint(subject="a", tenant="t", scopes=[])

    response = await client.get("/me", headers=_auth(token))

    assert response.status_code == 401
    message = "token audience does not include 'mainstay'"
    assert response.json()["error"]["message"] == message
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith('Bearer realm="mainstay", error="invalid_token"')
    assert message in challenge
    assert token not in response.text


@pytest.mark.parametrize("scope", ["memory:write", "memory:*", "*"])
async def test_a_granting_scope_passes(
    client: httpx.AsyncClient, signer: TokenSigner, scope: str
) -> None:
    token = signer.mint(subject="writer", tenant="t", scopes=[scope])

    response = await client.post("/memories", headers=_auth(token))

    assert response.status_code == 200
    assert response.json() == {"written_by": "writer"}


async def test_a_missing_scope_is_403_naming_it(
    client: httpx.AsyncClient, signer: TokenSigner
) -> None:
    token = signer.mint(subject="reader", tenant="t", scopes=["memory:read"])

    response = await client.post("/memories", headers=_auth(token))

    assert response.status_code == 403
    assert response.json() == {
        "error": {"type": "PermissionDenied", "message": "missing scope 'memory:write'"}
    }
    assert (
        'error="insufficient_scope", scope="memory:write"' in response.headers["www-authenticate"]
    )


async def test_the_dependency_works_in_a_plain_fastapi_app(
    verifier: TokenVerifier, signer: TokenSigner
) -> None:
    app = FastAPI()
    attach_verifier(app, verifier)
    _add_routes(app)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        denied = await client.get("/me", headers=_auth("garbage"))
        allowed = await client.get(
            "/me", headers=_auth(signer.mint(subject="a", tenant="t", scopes=[]))
        )

    assert denied.status_code == 401
    assert denied.json() == {"detail": "malformed token"}
    assert "invalid_token" in denied.headers["www-authenticate"]
    assert allowed.status_code == 200


async def test_over_a_real_server(app: FastAPI, signer: TokenSigner) -> None:
    writer = signer.mint(subject="writer", tenant="t", scopes=["memory:*"])
    reader = signer.mint(subject="reader", tenant="t", scopes=["memory:read"])

    async with (
        HttpServer(app) as server,
        httpx.AsyncClient(base_url=server.url, timeout=5) as client,
    ):
        ok = await client.post("/memories", headers=_auth(writer))
        forbidden = await client.post("/memories", headers=_auth(reader))
        unauthenticated = await client.post("/memories")

    assert ok.status_code == 200
    assert forbidden.status_code == 403
    assert unauthenticated.status_code == 401
    assert unauthenticated.headers["www-authenticate"] == 'Bearer realm="mainstay"'
