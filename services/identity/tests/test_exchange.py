"""RFC 8693 token exchange: an agent acting for a user, with the chain in ``act``."""

from __future__ import annotations

import jwt
import pytest

from mainstay_common.auth import TokenSigner
from mainstay_identity.service import ACCESS_TOKEN_TYPE, EXCHANGE_GRANT

from .conftest import Identity, new_tenant
from .test_tokens import verifier_of

pytestmark = pytest.mark.real


async def exchange(
    identity: Identity, client_id: str, secret: str, subject_token: str, **form: str
) -> dict[str, object]:
    response = await identity.http.post(
        "/oauth/token",
        data={
            "grant_type": EXCHANGE_GRANT,
            "client_id": client_id,
            "client_secret": secret,
            "subject_token": subject_token,
            "subject_token_type": ACCESS_TOKEN_TYPE,
            **form,
        },
    )
    return {"status": response.status_code, **response.json()}


async def user_token(identity: Identity, tenant: str) -> str:
    secret = await identity.register(
        tenant,
        "ann",
        ["memory:read:concierge", "memory:write:concierge", "billing:read"],
        kind="user",
    )
    response = await identity.token(f"{tenant}/ann", secret)
    return str(response.json()["access_token"])


async def test_an_agent_acts_for_a_user_with_scopes_no_wider_than_both(
    identity: Identity,
) -> None:
    tenant = new_tenant()
    ann = await user_token(identity, tenant)
    agent = await identity.register(
        tenant, "concierge", ["memory:read:concierge", "memory:write:*", "tools:call:*"]
    )
    answer = await exchange(identity, f"{tenant}/concierge", agent, ann)
    assert answer["status"] == 200, answer
    assert answer["issued_token_type"] == ACCESS_TOKEN_TYPE
    # billing:read is the user's alone, tools:call:* the agent's alone.
    assert answer["scope"] == "memory:read:concierge memory:write:concierge"
    token = str(answer["access_token"])
    principal = await verifier_of(identity).verify(token)
    assert (principal.subject, principal.tenant) == ("ann", tenant)
    assert principal.actor_chain == ("concierge",)
    claims = jwt.decode(token, options={"verify_signature": False})
    user_claims = jwt.decode(ann, options={"verify_signature": False})
    assert claims["act"] == {"sub": "concierge"}
    assert claims["exp"] <= user_claims["exp"]

    # A second agent acting through the first: the chain grows, the scopes shrink.
    helper = await identity.register(tenant, "helper", ["memory:read:concierge"])
    deeper = await exchange(identity, f"{tenant}/helper", helper, token)
    assert deeper["scope"] == "memory:read:concierge"
    chained = await verifier_of(identity).verify(str(deeper["access_token"]))
    assert chained.actor_chain == ("helper", "concierge")

    events = await identity.http.get(
        f"/v1/tenants/{tenant}/credential-events", headers=identity.admin_headers(tenant)
    )
    assert [e["event"] for e in events.json()["events"]].count("exchanged") == 2


async def test_asking_for_more_than_both_hold_is_invalid_scope(identity: Identity) -> None:
    tenant = new_tenant()
    ann = await user_token(identity, tenant)
    agent = await identity.register(tenant, "concierge", ["memory:read:concierge"])
    answer = await exchange(
        identity, f"{tenant}/concierge", agent, ann, scope="memory:read:concierge billing:read"
    )
    assert answer["status"] == 400
    assert answer["error"] == "invalid_scope"


async def test_foreign_and_forged_subject_tokens_are_invalid_grants(identity: Identity) -> None:
    tenant, other = new_tenant(), new_tenant()
    agent = await identity.register(tenant, "concierge", ["memory:read:concierge"])
    foreign = await user_token(identity, other)
    answer = await exchange(identity, f"{tenant}/concierge", agent, foreign)
    assert (answer["status"], answer["error"]) == (400, "invalid_grant")
    assert answer["error_description"] == "subject_token belongs to another tenant"

    forged = TokenSigner.generate().mint(
        subject="ann", tenant=tenant, scopes=["memory:read:concierge"]
    )
    answer = await exchange(identity, f"{tenant}/concierge", agent, forged)
    assert (answer["status"], answer["error"]) == (400, "invalid_grant")
    assert "signed by an unknown key" in str(answer["error_description"])

    answer = await exchange(identity, f"{tenant}/concierge", "wrong-secret", foreign)
    assert (answer["status"], answer["error"]) == (401, "invalid_client")
