"""Authentication and authorisation for every Mainstay service.

Tokens are EdDSA-signed JWTs issued by the identity service and verified here
against its JWKS (:class:`TokenVerifier`); a verified token becomes a
:class:`Principal` that handlers check scopes on. Adapters put the principal
where handlers find it: :class:`AuthInterceptor` for gRPC, the
:func:`require_principal` / :func:`requires_scope` dependencies for FastAPI,
and :func:`current_principal` anywhere below either.

Services read the identity service's keys from ``MAINSTAY_AUTH_JWKS_URL``
(its ``/.well-known/jwks.json``) and its revocations from
``MAINSTAY_AUTH_REVOCATIONS_URL`` (``/v1/revocations``); ``./dev up`` points
them there. The development admin token (``.mainstay/admin.token``) is signed
by the identity service too, with ``python -m mainstay_identity.bootstrap``;
:mod:`mainstay_common.auth.devkeys` only writes the Fernet key files.
"""

from mainstay_common.auth._client import ClientCredentials, TokenSource, parse_credentials
from mainstay_common.auth._context import (
    bind_principal,
    current_principal,
    set_current_principal,
)
from mainstay_common.auth._fastapi import attach_verifier, require_principal, requires_scope
from mainstay_common.auth._grpc import DEFAULT_EXEMPT_METHODS, AuthInterceptor
from mainstay_common.auth._jwk import parse_jwks
from mainstay_common.auth._jwks import JwksCache
from mainstay_common.auth._principal import Principal, scope_grants
from mainstay_common.auth._revocations import RevocationFeed, client_digest
from mainstay_common.auth._signer import DEFAULT_AUDIENCE, DEFAULT_ISSUER, TokenSigner
from mainstay_common.auth._verifier import (
    KeySource,
    RevocationCheck,
    TokenVerifier,
    parse_bearer,
)

__all__ = [
    "DEFAULT_AUDIENCE",
    "DEFAULT_EXEMPT_METHODS",
    "DEFAULT_ISSUER",
    "AuthInterceptor",
    "ClientCredentials",
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
