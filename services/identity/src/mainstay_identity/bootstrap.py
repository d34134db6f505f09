"""Operator tokens signed by the identity service, without going through its HTTP API.

Someone has to hold the first token: registering principals needs
``identity:admin``, and nothing can have that before a token exists. This
command opens the identity service's database with the service's own settings
(``MAINSTAY_POSTGRES_DSN``, ``IDENTITY_KEY_SECRETS`` / ``IDENTITY_KEY_SECRET_FILE``),
signs a token with the active signing key and audits it as ``issued``::

    python -m mainstay_identity.bootstrap admin-token --out .mainstay/admin.token \\
        [--subject admin] [--tenant default] [--scope '*'] [--ttl-s 86400]

``./dev up`` runs it once the identity service is ready. It is idempotent: a
token already at ``--out`` is kept while it verifies against the service's
current keys (the active one, or a retired one still published), is not
revoked, was issued for the same subject, tenant and scopes, and has more than
half of its lifetime left; otherwise a new one replaces it (atomically, mode
0600). The lifetime is at most ``IDENTITY_OPERATOR_TOKEN_TTL_S``, which is also
how long a rotated key stays published, so a rotation never cuts an operator
token short.

From Python: ``await ensure_admin_token(path)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path  # noqa: TC003 - typer reads the annotations at runtime
from typing import TYPE_CHECKING, Annotated

import asyncpg
import jwt
import typer
from pydantic import ValidationError

from mainstay_common.auth import TokenVerifier
from mainstay_common.db import LIBRARY_MIGRATIONS, Database, load_migrations, redact_dsn
from mainstay_common.errors import MainstayError, Unauthenticated
from mainstay_common.files import write_atomically
from mainstay_identity.app import MIGRATIONS, SCHEMA, key_secrets, key_store
from mainstay_identity.settings import IdentitySettings
from mainstay_identity.store.events import CredentialLog
from mainstay_identity.store.revocations import RevocationStore

if TYPE_CHECKING:
    from collections.abc import Iterable

    from mainstay_common.auth import Principal
    from mainstay_identity.store.keys import KeyStore

__all__ = ["AdminToken", "BootstrapError", "app", "ensure_admin_token", "main"]


class BootstrapError(RuntimeError):
    """The token could not be issued; the message says why and what to set."""


@dataclass(frozen=True)
class AdminToken:
    """The token at ``path`` after :func:`ensure_admin_token`."""

    path: Path
    kept: bool
    """``True`` when the token already there was still good and left alone."""
    token_id: str
    kid: str
    subject: str
    tenant: str
    scopes: tuple[str, ...]
    expires_at: datetime

    def describe(self) -> str:
        verb = "kept" if self.kept else "written"
        return (
            f"admin token {verb}: {self.path} (subject {self.subject}, tenant {self.tenant},"
            f" scope {' '.join(self.scopes)}, key {self.kid},"
            f" expires {self.expires_at.isoformat(timespec='seconds')})"
        )


def _normalise_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    found = sorted({part for scope in scopes for part in scope.split()})
    if not found:
        raise BootstrapError("at least one scope is needed (e.g. --scope '*')")
    return tuple(found)


def _write_token(path: Path, token: str) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomically(path, token.encode() + b"\n", mode=0o600)


def _read_token(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return ""
    except (OSError, UnicodeDecodeError) as exc:
        raise BootstrapError(f"cannot read {path}: {exc}") from exc


def _worth_keeping(
    principal: Principal,
    *,
    subject: str,
    tenant: str,
    scopes: tuple[str, ...],
    max_ttl: timedelta,
    now: datetime,
) -> bool:
    if (principal.subject, principal.tenant) != (subject, tenant) or principal.actor_chain:
        return False
    if tuple(sorted(principal.scopes)) != scopes:
        return False
    issued_at = principal.claims.get("iat")
    if not isinstance(issued_at, int | float):
        return False
    lifetime = principal.expires_at - datetime.fromtimestamp(issued_at, tz=UTC)
    # A token that lives longer than its key is guaranteed to stay published is no keeper.
    if lifetime > max_ttl:
        return False
    return principal.expires_at - now > lifetime / 2


async def _open_database(settings: IdentitySettings, stack: contextlib.AsyncExitStack) -> Database:
    where = redact_dsn(settings.postgres.dsn)
    try:
        database = await stack.enter_async_context(Database(settings.postgres, schema=SCHEMA))
    except (MainstayError, OSError, asyncpg.PostgresError) as exc:
        raise BootstrapError(
            f"cannot reach the identity database at {where} (MAINSTAY_POSTGRES_DSN): {exc}"
        ) from exc
    try:
        # The same migrations the service applies at start; applied ones are skipped.
        await database.migrate(LIBRARY_MIGRATIONS, load_migrations(MIGRATIONS, namespace=SCHEMA))
    except (MainstayError, OSError, asyncpg.PostgresError) as exc:
        raise BootstrapError(f"cannot migrate schema {SCHEMA!r} at {where}: {exc}") from exc
    return database


async def ensure_admin_token(
    out: Path,
    *,
    settings: IdentitySettings | None = None,
    subject: str = "admin",
    tenant: str = "default",
    scopes: Iterable[str] = ("*",),
    ttl_s: int | None = None,
    now: datetime | None = None,
) -> AdminToken:
    """Keep the operator token at ``out`` if it is still good, else sign and write a new one.

    ``settings`` defaults to :class:`IdentitySettings` read from the environment,
    exactly as the service reads them. ``ttl_s`` defaults to, and may not
    exceed, ``settings.operator_token_ttl_s``. Raises :class:`BootstrapError`
    with a message meant for an operator.
    """
    if settings is None:
        try:
            settings = IdentitySettings()
        except ValidationError as exc:
            raise BootstrapError(f"invalid identity settings in the environment: {exc}") from exc
    max_ttl_s = settings.operator_token_ttl_s
    ttl_s = max_ttl_s if ttl_s is None else ttl_s
    if ttl_s > max_ttl_s:
        raise BootstrapError(
            f"--ttl-s {ttl_s} exceeds IDENTITY_OPERATOR_TOKEN_TTL_S ({max_ttl_s}): a rotated key"
            " stays published only that long, so a longer-lived token could stop verifying"
            " before it expires; raise IDENTITY_OPERATOR_TOKEN_TTL_S (for the service too) or"
            " ask for less"
        )
    if ttl_s < 1:
        raise BootstrapError(f"--ttl-s must be at least 1 second, not {ttl_s}")
    wanted = _normalise_scopes(scopes)
    try:
        secrets = key_secrets(settings)
    except ValueError as exc:
        raise BootstrapError(str(exc)) from exc
    if not secrets:
        raise BootstrapError(
            "no key secret: set IDENTITY_KEY_SECRETS or IDENTITY_KEY_SECRET_FILE to the Fernet"
            " key(s) the identity service encrypts its signing keys with"
        )
    ttl = timedelta(seconds=ttl_s)
    max_ttl = timedelta(seconds=max_ttl_s)
    moment = now or datetime.now(UTC)
    async with contextlib.AsyncExitStack() as stack:
        database = await _open_database(settings, stack)
        try:
            keys = key_store(database, settings, secrets)
            result = await _ensure(
                out,
                keys=keys,
                database=database,
                settings=settings,
                subject=subject,
                tenant=tenant,
                scopes=wanted,
                ttl=ttl,
                max_ttl=max_ttl,
                now=moment,
            )
        except MainstayError as exc:
            raise BootstrapError(f"cannot issue the token: {exc.message}") from exc
    return result


async def _ensure(
    out: Path,
    *,
    keys: KeyStore,
    database: Database,
    settings: IdentitySettings,
    subject: str,
    tenant: str,
    scopes: tuple[str, ...],
    ttl: timedelta,
    max_ttl: timedelta,
    now: datetime,
) -> AdminToken:
    existing = await asyncio.to_thread(_read_token, out)
    if existing:
        verifier = TokenVerifier(
            keys,
            issuer=settings.issuer,
            audience=settings.audience,
            leeway_s=0.0,
            is_revoked=RevocationStore(database).is_revoked,
        )
        try:
            principal = await verifier.verify(existing)
        except Unauthenticated:
            principal = None
        if principal is not None and _worth_keeping(
            principal, subject=subject, tenant=tenant, scopes=scopes, max_ttl=max_ttl, now=now
        ):
            return AdminToken(
                path=out,
                kept=True,
                token_id=principal.token_id,
                kid=_kid_of(existing),
                subject=subject,
                tenant=tenant,
                scopes=scopes,
                expires_at=principal.expires_at,
            )
    signer = await keys.signer()
    token_id = uuid.uuid4().hex
    token = signer.mint(
        subject=subject, tenant=tenant, scopes=scopes, ttl=ttl, token_id=token_id, now=now
    )
    # Audited before it is handed out: no token of this service goes unrecorded.
    await CredentialLog(database).record(
        tenant=tenant,
        principal=subject,
        event="issued",
        jti=token_id,
        detail=f"operator token by mainstay_identity.bootstrap (ttl {int(ttl.total_seconds())}s)"
        f" kid={signer.kid} scope={' '.join(scopes)}",
    )
    try:
        await asyncio.to_thread(_write_token, out, token)
    except OSError as exc:
        raise BootstrapError(f"cannot write {out}: {exc}") from exc
    return AdminToken(
        path=out,
        kept=False,
        token_id=token_id,
        kid=signer.kid,
        subject=subject,
        tenant=tenant,
        scopes=scopes,
        expires_at=now.replace(microsecond=0) + ttl,
    )


def _kid_of(token: str) -> str:
    kid = jwt.get_unverified_header(token).get("kid", "")
    return kid if isinstance(kid, str) else ""


app = typer.Typer(
    name="mainstay_identity.bootstrap",
    help=(
        "Operator tokens signed by the identity service's own keys, read from its database"
        " with its settings (MAINSTAY_POSTGRES_DSN, IDENTITY_KEY_SECRETS or"
        " IDENTITY_KEY_SECRET_FILE)."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """Keep ``admin-token`` a subcommand even while it is the only one."""


@app.command("admin-token")
def admin_token(
    *,
    out: Annotated[Path, typer.Option("--out", help="Where the token is written (mode 0600).")],
    subject: Annotated[str, typer.Option(help="The token's subject (sub).")] = "admin",
    tenant: Annotated[str, typer.Option(help="The token's tenant.")] = "default",
    scope: Annotated[
        list[str] | None,
        typer.Option(
            "--scope",
            help="A scope; repeat it, or give several separated by spaces (default: '*').",
            show_default=False,
        ),
    ] = None,
    ttl_s: Annotated[
        int | None,
        typer.Option(
            "--ttl-s",
            help="Lifetime in seconds (default and maximum: IDENTITY_OPERATOR_TOKEN_TTL_S).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Write a token to --out, or keep the one there while it verifies and has more than
    half of its lifetime left."""
    try:
        result = asyncio.run(
            ensure_admin_token(
                out, subject=subject, tenant=tenant, scopes=scope or ["*"], ttl_s=ttl_s
            )
        )
    except BootstrapError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(code=1) from None
    typer.echo(result.describe())


def main() -> None:
    """Entry point of ``python -m mainstay_identity.bootstrap``."""
    app()


if __name__ == "__main__":
    main()
