"""The composition root: builds the identity service from its settings and runs it.

Start order: telemetry, PostgreSQL (+ migrations), the signing key, bus,
heartbeats, outbox relay, the approval expiry loop, the SMTP listener (when
configured), HTTP. Stop order is the reverse.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from mainstay_common.auth import TokenVerifier
from mainstay_common.db import Outbox, OutboxRelay
from mainstay_common.http import ReadinessCheck, create_http_app
from mainstay_common.lifecycle import cancel_and_wait, sweep_forever
from mainstay_common.service import ServiceApp
from mainstay_common.settings import secret_values
from mainstay_contracts.identity import APPROVAL_EVENTS, MAILBOX_EVENTS
from mainstay_identity.email_bridge import EmailInbound, EmailOutbound
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
    from mainstay_common.db import Database
    from mainstay_identity.settings import IdentitySettings

__all__ = ["MIGRATIONS", "SCHEMA", "IdentityApp", "create_app", "key_secrets", "key_store"]

_log = logging.getLogger("mainstay.identity")
MIGRATIONS = Path(__file__).parent / "store" / "migrations"
SCHEMA = "identity"
# Verifiers may accept a token a little after its expiry (clock skew).
_LEEWAY = timedelta(minutes=5)


def key_secrets(settings: IdentitySettings) -> list[str]:
    """The configured key secrets: ``key_secrets``, else the lines of ``key_secret_file``."""
    return secret_values(settings.key_secrets, settings.key_secret_file, what="key secret")


def key_store(database: Database, settings: IdentitySettings, secrets: list[str]) -> KeyStore:
    """The signing keys as every user of them sees them: a rotated key stays published until
    the longest-lived token it may have signed (an access or an operator token) has expired."""
    longest = max(settings.token_ttl_s, settings.operator_token_ttl_s)
    return KeyStore(
        database,
        secrets,
        issuer=settings.issuer,
        audience=settings.audience,
        retire_after=timedelta(seconds=longest) + _LEEWAY,
    )


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
        self.email_inbound: EmailInbound | None = None

    @property
    def smtp_port(self) -> int:
        """The port of the inbound SMTP listener (when ``smtp_listen_port`` is set)."""
        assert self.email_inbound is not None, "no SMTP listener is configured"
        return self.email_inbound.port

    async def _start(self, stack: contextlib.AsyncExitStack) -> None:
        settings = self.settings
        secrets = key_secrets(settings)  # a missing secret fails before anything starts
        telemetry = self._telemetry(stack, "identity")
        database = await self._database(stack, schema=SCHEMA, migrations=MIGRATIONS)
        ttl = timedelta(seconds=settings.token_ttl_s)
        keys = key_store(database, settings, secrets)
        await keys.signer()  # the first instance creates the first key
        bus = self._bus("identity", telemetry, store=database)
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
        outbound = EmailOutbound(database, settings) if settings.smtp_host else None
        register_kafka_handlers(bus, mail, verifier, outbound)
        await bus.start(extra_topics=[MAILBOX_EVENTS, APPROVAL_EVENTS])
        stack.push_async_callback(bus.close)
        await self._heartbeats(stack, service="identity")
        await stack.enter_async_context(OutboxRelay(database, bus.send_many))
        # Every instance sweeps: each approval is expired once, locked rows are skipped.
        expiry = asyncio.create_task(
            sweep_forever(
                mail.expire_approvals,
                interval_s=settings.approval_sweep_s,
                what="expiring approvals",
            ),
            name="identity-approval-expiry",
        )
        stack.push_async_callback(cancel_and_wait, expiry)
        if settings.smtp_listen_port is not None:
            self.email_inbound = inbound = EmailInbound(database, mail, settings)
            await inbound.start()
            stack.push_async_callback(inbound.close)
            _log.info("identity receiving email on %s:%d", settings.smtp_listen_host, inbound.port)
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
            tracer_provider=telemetry.tracer_provider,
            token_verifier=verifier,
        )
        install_routes(app, service)
        app.include_router(create_mail_router(mail))
        http = await self._serve_http(stack, app)
        _log.info("identity serving HTTP on %s:%d", settings.http_host, http.port)


def create_app(settings: IdentitySettings) -> IdentityApp:
    return IdentityApp(settings)
