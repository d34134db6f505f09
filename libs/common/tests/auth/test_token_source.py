"""TokenSource.token_or_none: callers that carry on without a token get None, never an error."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mainstay_common.auth import ClientCredentials, TokenSource
from mainstay_common.devstack import free_port

if TYPE_CHECKING:
    import pytest


async def test_no_credentials_for_the_tenant_gives_none() -> None:
    tokens = TokenSource("http://127.0.0.1:9/oauth/token", {})
    try:
        assert await tokens.token_or_none("acme") is None
    finally:
        await tokens.aclose()


async def test_identity_unreachable_gives_none_and_says_why(
    caplog: pytest.LogCaptureFixture,
) -> None:
    credentials = ClientCredentials(client_id="acme/mailer", secret="s3cret")
    tokens = TokenSource(f"http://127.0.0.1:{free_port()}/oauth/token", {"acme": credentials})
    try:
        assert await tokens.token_or_none("acme") is None
    finally:
        await tokens.aclose()
    assert "no token of tenant acme from identity" in caplog.text
