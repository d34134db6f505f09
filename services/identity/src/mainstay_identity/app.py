"""The composition root: builds the identity service from its settings and runs it.

Start order: telemetry, PostgreSQL (+ migrations), the signing key, bus,
outbox relay, HTTP. Stop order is the reverse.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from mainstay_common.auth import TokenVerifier
from mainstay_common.bus import Bus
from mainstay_common.db import Outbox, OutboxRelay
from mainstay_common.http import ReadinessCheck, create_http_app
from mainstay_common.service import ServiceApp
from mainstay_common.settings import secret_values
from mainstay_contracts.identity import MAILBOX_EVENTS
from mainstay_identity.handlers.http import install_routes
from mainstay_identity.handlers.kafka import register_kafka_handlers
from mainstay_identity.handlers.mail_http import create_mail_router
from mainstay_identity.mail import MailService
from mainstay_identity.service import IdentityService
from mainstay_identity.store.events import CredentialLog
from mainstay_identity.store.keys import KeyStore
from mainstay_identity.store.principals import PrincipalStore
from mainstay_identity.store.revocations import RevocationStore

if TYPE_CHECKING:
    import contextlib

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from mainstay_common.auth import KeySource
    from mainstay_identity.settings import IdentitySettings

__all__ = ["MIGRATIONS", "SCHEMA", "IdentityApp", "create_app", "key_secrets"]

_log = logging.getLogger("mainstay.identity")
MIGRATIONS = Path(__file__).parent / "store" / "migrations"
SCHEMA = "identity"
# Verifiers may accept a token a little after its expiry (clock skew).
_LEEWAY = timedelta(minutes=5)


def key_secrets(settings: IdentitySettings) -> list[str]:
    """The configured key secrets: ``key_secrets``, else the lines of ``key_secret_file``."""
    return secret_values(settings.key_secrets, settings.key_secret_file, what="key secret")


class EitherKeys:
    """Public keys of this service's own store first, then of the configured JWKS."""

    def __init__(self, first: KeySource, second: KeySource) -> None:
        self._sources = (first, second)

    async def get_key(self, kid: str) -> Ed25519PublicKey | None:
        for source in self._sources:
            key = await source.get_key(kid)
            if key is not None:
                return key
        return None


class IdentityApp(ServiceApp):
    """One running instance of the identity service."""

    settings: IdentitySettings

    def __init__(self, settings: IdentitySettings) -> None:
        super().__init__(settings)
        self.service: IdentityService | None = None
        self.mail: MailService | None = None

    async def _start(self, stack: contextlib.AsyncExitStack) -> None:
        settings = self.settings
        secrets = key_secrets(settings)
        telemetry = self._telemetry(stack, "identity")
        database = await self._database(stack, schema=SCHEMA, migrations=MIGRATIONS)
        ttl = timedelta(seconds=settings.token_ttl_s)
        keys = KeyStore(
            database,
            secrets,
            issuer=settings.issuer,
            audience=settings.audience,
            retire_after=ttl + _LEEWAY,
        )
        await keys.signer()  # the first instance creates the first key
        self.bus = bus = Bus.for_service("identity", settings, registry=telemetry.registry)
        revocations = RevocationStore(database)
        # Tokens this service signed, and the operators' tokens of MAINSTAY_AUTH_*.
        configured = TokenVerifier.from_settings(settings.auth)
        verifier = TokenVerifier(
            EitherKeys(keys, configured.keys),
            issuer=settings.auth.issuer,
            audience=settings.auth.audience,
            leeway_s=settings.auth.leeway_s,
            is_revoked=revocations.is_revoked,
        )
        self.mail = mail = MailService(database, bus, Outbox(database))
        register_kafka_handlers(bus, mail, verifier)
        await bus.start(extra_topics=[MAILBOX_EVENTS])
        stack.push_async_callback(bus.close)
        await stack.enter_async_context(OutboxRelay(database, bus.send_many))
        self.service = service = IdentityService(
            principals=PrincipalStore(database),
            keys=keys,
            log=CredentialLog(database),
            revocations=revocations,
            token_ttl=ttl,
            failed_attempts_per_minute=settings.failed_attempts_per_minute,
            issuer=settings.issuer,
            audience=settings.audience,
        )
        app = create_http_app(
            title="Mainstay identity",
            version="v1",
            readiness=[ReadinessCheck("postgres", database.ping)],
            metrics_registry=telemetry.registry,
            token_verifier=verifier,
        )
        install_routes(app, service)
        app.include_router(create_mail_router(mail))
        http = await self._serve_http(stack, app)
        _log.info("identity serving HTTP on %s:%d", settings.http_host, http.port)


def create_app(settings: IdentitySettings) -> IdentityApp:
    return IdentityApp(settings)
