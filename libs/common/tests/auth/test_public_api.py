"""The exported names are the contract: adding or removing one must be deliberate."""

from __future__ import annotations

import mainstay_common.auth
import mainstay_common.auth.devkeys


def test_auth_exports() -> None:
    assert sorted(mainstay_common.auth.__all__) == [
        "AuthInterceptor",
        "ClientCredentials",
        "DEFAULT_AUDIENCE",
        "DEFAULT_EXEMPT_METHODS",
        "DEFAULT_ISSUER",
        "JwksCache",
        "KeySource",
        "Principal",
        "RevocationCheck",
        "RevocationFeed",
        "TokenSigner",
        "TokenSource",
        "TokenVerifier",
        "attach_verifier",
        "bind_principal",
        "client_digest",
        "current_principal",
        "parse_bearer",
        "parse_credentials",
        "parse_jwks",
        "require_principal",
        "requires_scope",
        "scope_grants",
        "set_current_principal",
    ]
    assert all(hasattr(mainstay_common.auth, name) for name in mainstay_common.auth.__all__)


def test_devkeys_exports() -> None:
    assert sorted(mainstay_common.auth.devkeys.__all__) == [
        "DevSecrets",
        "IDENTITY_KEY_FILE",
        "VAULT_KEY_FILE",
        "ensure_dev_secrets",
    ]
    assert all(
        hasattr(mainstay_common.auth.devkeys, name) for name in mainstay_common.auth.devkeys.__all__
    )
