"""Client credentials, the JWKS, key rotation and brute-force limiting, over real HTTP."""

from __future__ import annotations

import base64

import jwt
import pytest

from mainstay_common.auth import JwksCache, TokenVerifier

from .conftest import Identity, new_tenant

pytestmark = pytest.mark.real


def verifier_of(identity: Identity) -> TokenVerifier:
    url = f"{identity.http.base_url}/.well-known/jwks.json"
    return TokenVerifier(
        JwksCache(url, refresh_min_interval_s=0.0), issuer="mainstay-identity", audience="mainstay"
    )


async def test_an_agent_gets_a_short_lived_token_any_service_verifies(identity: Identity) -> None:
    tenant = new_tenant()
    secret = await identity.register(tenant, "planner", ["memory:read:planner", "tools:call:*"])
    response = await identity.token(f"{tenant}/planner", secret)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    answer = response.json()
    assert answer["token_type"] == "Bearer"
    assert answer["expires_in"] == 60
    assert answer["scope"] == "memory:read:planner tools:call:*"

    principal = await verifier_of(identity).verify(answer["access_token"])
    assert (principal.subject, principal.tenant) == ("planner", tenant)
    assert principal.scopes == {"memory:read:planner", "tools:call:*"}
    claims = jwt.decode(answer["access_token"], options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 60
    assert {"iss", "sub", "aud", "tenant", "scope", "exp", "jti"} <= claims.keys()
    assert jwt.get_unverified_header(answer["access_token"])["alg"] == "EdDSA"


async def test_scopes_can_be_narrowed_never_widened(identity: Identity) -> None:
    tenant = new_tenant()
    secret = await identity.register(tenant, "reader", ["memory:read:a", "memory:write:a"])
    narrowed = await identity.token(f"{tenant}/reader", secret, scope="memory:read:a")
    assert narrowed.json()["scope"] == "memory:read:a"
    wider = await identity.token(f"{tenant}/reader", secret, scope="memory:read:a tools:admin")
    assert wider.status_code == 400
    assert wider.json() == {
        "error": "invalid_scope",
        "error_description": "not granted to this client: tools:admin",
    }


async def test_http_basic_client_authentication(identity: Identity) -> None:
    tenant = new_tenant()
    secret = await identity.register(tenant, "svc", ["x:y"], kind="service")
    basic = base64.b64encode(f"{tenant}/svc:{secret}".encode()).decode()
    response = await identity.http.post(
        "/oauth/token",
        data={"grant_type": "client_credentials"},
        headers={"Authorization": f"Basic {basic}"},
    )
    assert response.status_code == 200, response.text
    bad = base64.b64encode(f"{tenant}/svc:wrong".encode()).decode()
    refused = await identity.http.post(
        "/oauth/token",
        data={"grant_type": "client_credentials"},
        headers={"Authorization": f"Basic {bad}"},
    )
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"].startswith("Basic")
    assert refused.json()["error"] == "invalid_client"


@pytest.mark.parametrize(
    ("form", "status", "error"),
    [
        ({}, 400, "invalid_request"),
        ({"grant_type": "password"}, 400, "unsupported_grant_type"),
        ({"grant_type": "client_credentials"}, 401, "invalid_client"),
        (
            {"grant_type": "client_credentials", "client_id": "no-slash", "client_secret": "s"},
            401,
            "invalid_client",
        ),
    ],
)
async def test_bad_requests_get_rfc_6749_errors(
    identity: Identity, form: dict[str, str], status: int, error: str
) -> None:
    response = await identity.http.post("/oauth/token", data=form)
    assert response.status_code == status
    assert response.json()["error"] == error
    assert response.json()["error_description"]


async def test_a_new_secret_replaces_the_old_and_a_disabled_client_gets_nothing(
    identity: Identity,
) -> None:
    tenant = new_tenant()
    old = await identity.register(tenant, "rotating", ["a:b"])
    new = await identity.register(tenant, "rotating", ["a:b"])
    assert (await identity.token(f"{tenant}/rotating", old)).status_code == 401
    assert (await identity.token(f"{tenant}/rotating", new)).status_code == 200
    await identity.http.put(
        f"/v1/tenants/{tenant}/principals/rotating",
        json={"kind": "agent", "scopes": ["a:b"], "disabled": True},
        headers=identity.admin_headers(tenant),
    )
    assert (await identity.token(f"{tenant}/rotating", new)).status_code == 401


async def test_failed_attempts_are_rate_limited(identity: Identity) -> None:
    # The test service allows 5 failures per client and minute.
    tenant = new_tenant()
    secret = await identity.register(tenant, "target", ["a:b"])
    statuses = [
        (await identity.token(f"{tenant}/target", f"guess-{n}")).status_code for n in range(5)
    ]
    assert statuses == [401] * 5
    blocked = await identity.token(f"{tenant}/target", secret)  # even the right secret, for now
    assert blocked.status_code == 429
    assert blocked.headers["retry-after"] == "60"
    assert "too many failed attempts" in blocked.json()["error_description"]
    events = await identity.http.get(
        f"/v1/tenants/{tenant}/credential-events", headers=identity.admin_headers(tenant)
    )
    kinds = [e["event"] for e in events.json()["events"]]
    assert kinds.count("failed") == 5
    assert "secret-issued" in kinds


async def test_rotation_keeps_tokens_of_the_old_key_valid(identity: Identity) -> None:
    tenant = new_tenant()
    secret = await identity.register(tenant, "long-task", ["a:b"])
    before = (await identity.token(f"{tenant}/long-task", secret)).json()["access_token"]
    rotated = await identity.http.post(
        "/v1/keys/rotate", headers=identity.admin_headers(tenant, ("*",))
    )
    assert rotated.status_code == 200, rotated.text
    kids = rotated.json()
    after = (await identity.token(f"{tenant}/long-task", secret)).json()["access_token"]
    assert jwt.get_unverified_header(before)["kid"] == kids["retired"]
    assert jwt.get_unverified_header(after)["kid"] == kids["active"]
    published = (await identity.http.get("/.well-known/jwks.json")).json()["keys"]
    assert {k["kid"] for k in published} >= {kids["retired"], kids["active"]}
    assert all(k["kty"] == "OKP" and k["crv"] == "Ed25519" for k in published)
    verifier = verifier_of(identity)
    assert (await verifier.verify(before)).subject == "long-task"
    assert (await verifier.verify(after)).subject == "long-task"
    # Rotation needs '*'; identity:admin alone is not enough.
    denied = await identity.http.post("/v1/keys/rotate", headers=identity.admin_headers(tenant))
    assert denied.status_code == 403


async def test_administration_stays_inside_the_callers_tenant(identity: Identity) -> None:
    mine, theirs = new_tenant(), new_tenant()
    response = await identity.http.put(
        f"/v1/tenants/{theirs}/principals/spy",
        json={"kind": "agent"},
        headers=identity.admin_headers(mine),
    )
    assert response.status_code == 403
    bad_name = await identity.http.put(
        f"/v1/tenants/{mine}/principals/has space",
        json={"kind": "agent"},
        headers=identity.admin_headers(mine),
    )
    assert bad_name.status_code == 400
    assert "name 'has space'" in bad_name.json()["error"]["message"]
    no_token = await identity.http.get(f"/v1/tenants/{mine}/principals/x")
    assert no_token.status_code == 401


async def test_a_retired_key_leaves_the_jwks_once_its_tokens_have_expired(
    identity: Identity,
) -> None:
    tenant = new_tenant()
    rotated = await identity.http.post(
        "/v1/keys/rotate", headers=identity.admin_headers(tenant, ("*",))
    )
    retired = rotated.json()["retired"]
    published = {
        k["kid"] for k in (await identity.http.get("/.well-known/jwks.json")).json()["keys"]
    }
    assert retired in published
    # Time passes beyond the last token the retired key could have signed.
    assert identity.app.service is not None
    await identity.app.service.keys._database.execute(
        "UPDATE signing_keys SET retire_after = now() - interval '1 second' WHERE kid = $1",
        retired,
    )
    published = {
        k["kid"] for k in (await identity.http.get("/.well-known/jwks.json")).json()["keys"]
    }
    assert retired not in published
    assert rotated.json()["active"] in published
