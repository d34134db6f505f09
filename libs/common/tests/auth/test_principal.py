"""Scope matching and the principal's guarantees."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from mainstay_common.auth import Principal, bind_principal, current_principal, scope_grants
from mainstay_common.errors import PermissionDenied, Unauthenticated


def _principal(*scopes: str, claims: dict[str, object] | None = None) -> Principal:
    return Principal(
        subject="agent-7",
        tenant="acme",
        scopes=frozenset(scopes),
        token_id="jti-1",
        expires_at=datetime(2030, 1, 1, tzinfo=UTC),
        claims=claims or {"sub": "agent-7"},
    )


@pytest.mark.parametrize(
    ("granted", "required", "allowed"),
    [
        ("memory:read", "memory:read", True),
        ("memory:read", "memory:write", False),
        ("memory:*", "memory:read", True),
        ("memory:*", "memory:read:notes", True),
        ("memory:*", "memory", False),
        ("memory:*", "memory-admin:read", False),
        ("memory:read:*", "memory:read:notes", True),
        ("memory:read:*", "memory:write:notes", False),
        ("*", "anything:at:all", True),
        ("*", "*", True),
        ("memory:read", "memory:*", False),  # a wildcard is only special when granted
        ("memory:*", "memory:*", True),
        ("mem*", "memory:read", False),  # only a whole trailing segment is a wildcard
    ],
)
def test_scope_grants(granted: str, required: str, allowed: bool) -> None:
    assert scope_grants(granted, required) is allowed


def test_require_scope_names_the_missing_scope() -> None:
    principal = _principal("memory:read", "tools:*")

    principal.require_scope("memory:read")
    principal.require_scope("tools:call:web-search")
    with pytest.raises(PermissionDenied, match="missing scope 'memory:write'") as caught:
        principal.require_scope("memory:write")
    assert caught.value.http_status == 403
    assert caught.value.grpc_status_name == "PERMISSION_DENIED"


def test_a_principal_is_frozen_and_hides_its_claims() -> None:
    principal = _principal("memory:read", claims={"secret-ish": "value"})

    with pytest.raises(dataclasses.FrozenInstanceError):
        principal.subject = "someone-else"  # type: ignore[misc]
    with pytest.raises(TypeError):
        principal.claims["sub"] = "x"  # type: ignore[index]
    assert "secret-ish" not in repr(principal)
    assert hash(principal) == hash(_principal("memory:read"))
    assert principal.actor is None


def test_current_principal_fails_closed_outside_a_request() -> None:
    with pytest.raises(Unauthenticated, match="no authenticated principal"):
        current_principal()

    with bind_principal(_principal("memory:read")) as bound:
        assert current_principal() is bound

    with pytest.raises(Unauthenticated):
        current_principal()
