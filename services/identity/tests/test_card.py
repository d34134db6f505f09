"""A2A-style agent cards: served over HTTP and signed with a key of the JWKS."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.exceptions import InvalidSignature

from mainstay_common.auth import parse_jwks
from mainstay_identity.domain_card import signing_input

from .conftest import Identity, new_tenant

pytestmark = pytest.mark.real


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


async def test_an_agent_card_is_served_and_its_signature_checks_out(identity: Identity) -> None:
    tenant = new_tenant()
    await identity.register(
        tenant, "planner", ["tools:call:calculator"], description="Plans trips", owner="ann"
    )
    response = await identity.http.get(f"/v1/tenants/{tenant}/agents/planner/card")
    assert response.status_code == 200, response.text
    card = response.json()
    assert card["id"] == f"{tenant}/planner"
    assert (card["description"], card["owner"]) == ("Plans trips", "ann")
    assert card["capabilities"] == {"scopes": ["tools:call:calculator"]}
    assert card["authentication"]["token_url"].endswith("/oauth/token")

    [signature] = card["signatures"]
    header = json.loads(_unb64(signature["protected"]))
    assert header["alg"] == "EdDSA"
    keys = parse_jwks((await identity.http.get("/.well-known/jwks.json")).json())
    key = keys[header["kid"]]
    key.verify(_unb64(signature["signature"]), signing_input(signature["protected"], card))

    # Any change to the card breaks the signature.
    tampered = {**card, "capabilities": {"scopes": ["*"]}}
    with pytest.raises(InvalidSignature):
        key.verify(_unb64(signature["signature"]), signing_input(signature["protected"], tampered))


async def test_only_enabled_agents_have_cards(identity: Identity) -> None:
    tenant = new_tenant()
    await identity.register(tenant, "ann", [], kind="user")
    assert (await identity.http.get(f"/v1/tenants/{tenant}/agents/ann/card")).status_code == 404
    missing = await identity.http.get(f"/v1/tenants/{tenant}/agents/nobody/card")
    assert missing.status_code == 404
    assert missing.json()["error"]["message"] == f"tenant '{tenant}' has no agent 'nobody'"
