"""``mainstay_identity.bootstrap``: operator tokens signed by the service's own keys.

The tests share the module's running identity service (its database and key
secret), so the service itself and a JWKS-URL verifier judge each token.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import sys
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import jwt
import pytest

from mainstay_common.auth import Principal, TokenSigner, TokenVerifier
from mainstay_common.errors import Unauthenticated
from mainstay_common.lifecycle import within
from mainstay_common.settings import AuthSettings
from mainstay_identity.bootstrap import BootstrapError, ensure_admin_token

from .conftest import Identity, new_tenant

if TYPE_CHECKING:
    from pathlib import Path

    from mainstay_identity.settings import IdentitySettings

pytestmark = pytest.mark.real


def _settings(identity: Identity) -> IdentitySettings:
    settings = identity.app.settings
    assert settings.operator_token_ttl_s == 86_400  # the default
    return settings


async def _verify(identity: Identity, token: str) -> Principal:
    """Verify as every other service does from its MAINSTAY_AUTH_* settings under ./dev up."""
    base = str(identity.http.base_url).rstrip("/")
    verifier = TokenVerifier.from_settings(
        AuthSettings(
            jwks_url=f"{base}/.well-known/jwks.json",
            jwks_file=None,
            revocations_url=f"{base}/v1/revocations",
            revocations_poll_s=0.1,
        ),
        refresh_min_interval_s=0.0,
    )
    try:
        return await verifier.verify(token)
    finally:
        await verifier.aclose()


def _read(path: Path) -> str:
    return path.read_text().strip()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def _events(identity: Identity, tenant: str, token: str) -> list[dict[str, str]]:
    response = await identity.http.get(
        f"/v1/tenants/{tenant}/credential-events", headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 200, response.text
    events: list[dict[str, str]] = response.json()["events"]
    return events


async def test_the_token_is_accepted_by_the_service_and_by_a_jwks_url_verifier(
    identity: Identity, tmp_path: Path
) -> None:
    tenant = new_tenant()
    out = tmp_path / "home" / "admin.token"

    result = await ensure_admin_token(out, settings=_settings(identity), tenant=tenant)

    assert not result.kept
    assert _mode(out) == 0o600
    token = _read(out)
    principal = await _verify(identity, token)
    assert (principal.subject, principal.tenant, principal.scopes) == ("admin", tenant, {"*"})
    assert principal.token_id == result.token_id
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 86_400
    assert claims["iss"] == "mainstay-identity"
    assert claims["aud"] == "mainstay"
    assert jwt.get_unverified_header(token)["kid"] == result.kid
    # The service itself takes it (its admin API needs identity:admin, which '*' grants),
    # and the token is in the audit as issued by the bootstrap.
    events = await _events(identity, tenant, token)
    [issued] = [e for e in events if e["jti"] == result.token_id]
    assert issued["event"] == "issued"
    assert issued["principal"] == "admin"
    assert "mainstay_identity.bootstrap" in issued["detail"]
    assert f"kid={result.kid}" in issued["detail"]


async def test_a_second_run_keeps_a_valid_token(identity: Identity, tmp_path: Path) -> None:
    tenant = new_tenant()
    out = tmp_path / "admin.token"
    first = await ensure_admin_token(out, settings=_settings(identity), tenant=tenant)
    written = out.read_bytes()

    second = await ensure_admin_token(out, settings=_settings(identity), tenant=tenant)

    assert second.kept
    assert second.token_id == first.token_id
    assert second.kid == first.kid
    assert out.read_bytes() == written
    assert "admin token kept" in second.describe()
    token = _read(out)
    issued = [e for e in await _events(identity, tenant, token) if e["event"] == "issued"]
    assert len(issued) == 1  # nothing new was signed


async def test_a_token_of_a_rotated_out_key_is_kept_while_the_key_is_published(
    identity: Identity, tmp_path: Path
) -> None:
    tenant = new_tenant()
    out = tmp_path / "admin.token"
    first = await ensure_admin_token(out, settings=_settings(identity), tenant=tenant)
    rotated = await identity.http.post(
        "/v1/keys/rotate", headers={"Authorization": f"Bearer {_read(out)}"}
    )
    assert rotated.status_code == 200, rotated.text
    assert rotated.json()["retired"] == first.kid
    # The retired key stays published at least as long as an operator token lives.
    assert identity.app.service is not None
    retire_in = await identity.app.service.keys._database.fetchval(
        "SELECT extract(epoch FROM retire_after - now()) FROM signing_keys WHERE kid = $1",
        first.kid,
    )
    assert float(retire_in) >= 86_400

    again = await ensure_admin_token(out, settings=_settings(identity), tenant=tenant)

    assert again.kept
    assert again.kid == first.kid
    assert (await _verify(identity, _read(out))).token_id == first.token_id


def _stale(signer: TokenSigner, tenant: str, *, age: timedelta, ttl: timedelta) -> str:
    return signer.mint(
        subject="admin", tenant=tenant, scopes=["*"], ttl=ttl, now=datetime.now(UTC) - age
    )


async def test_invalid_expired_or_half_spent_tokens_are_replaced(
    identity: Identity, tmp_path: Path
) -> None:
    tenant = new_tenant()
    out = tmp_path / "admin.token"
    assert identity.app.service is not None
    own = await identity.app.service.keys.signer()
    day = timedelta(days=1)
    candidates = {
        "garbage": "not a token",
        "foreign key": TokenSigner.generate().mint(subject="admin", tenant=tenant, scopes=["*"]),
        "expired": _stale(own, tenant, age=2 * day, ttl=day),
        "less than half left": _stale(own, tenant, age=day * 0.6, ttl=day),
        "other scopes": own.mint(subject="admin", tenant=tenant, scopes=["memory:read"], ttl=day),
        "other subject": own.mint(subject="robot", tenant=tenant, scopes=["*"], ttl=day),
        "longer than operator tokens live": own.mint(
            subject="admin", tenant=tenant, scopes=["*"], ttl=2 * day
        ),
    }
    for label, token in candidates.items():
        out.write_text(token + "\n")

        result = await ensure_admin_token(out, settings=_settings(identity), tenant=tenant)

        assert not result.kept, label
        assert _read(out) != token, label
        assert (await _verify(identity, _read(out))).subject == "admin", label
        assert _mode(out) == 0o600, label


async def test_a_revoked_token_is_replaced(identity: Identity, tmp_path: Path) -> None:
    tenant = new_tenant()
    out = tmp_path / "admin.token"
    first = await ensure_admin_token(out, settings=_settings(identity), tenant=tenant)
    revoked = await identity.http.post(
        f"/v1/tenants/{tenant}/revocations",
        json={"jti": first.token_id, "reason": "pasted into a chat"},
        headers={"Authorization": f"Bearer {_read(out)}"},
    )
    assert revoked.status_code == 201, revoked.text
    await asyncio.sleep(0.2)  # one poll of the revocation feed
    with pytest.raises(Unauthenticated, match="revoked"):
        await _verify(identity, _read(out))

    second = await ensure_admin_token(out, settings=_settings(identity), tenant=tenant)

    assert not second.kept
    assert second.token_id != first.token_id
    assert (await _verify(identity, _read(out))).token_id == second.token_id


async def test_a_lifetime_beyond_the_operator_ttl_is_refused(
    identity: Identity, tmp_path: Path
) -> None:
    out = tmp_path / "admin.token"

    with pytest.raises(
        BootstrapError, match=r"--ttl-s 86401 exceeds IDENTITY_OPERATOR_TOKEN_TTL_S"
    ):
        await ensure_admin_token(out, settings=_settings(identity), ttl_s=86_401)

    assert not out.exists()
    shorter = await ensure_admin_token(out, settings=_settings(identity), ttl_s=600)
    claims = jwt.decode(_read(out), options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 600
    assert not shorter.kept


async def _cli(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mainstay_identity.bootstrap",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await within(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAINSTAY_", "IDENTITY_"))}
    return {**env, **extra}


async def test_the_command_reads_the_services_settings_from_the_environment(
    identity: Identity, tmp_path: Path
) -> None:
    settings = _settings(identity)
    out = tmp_path / "cli" / "admin.token"
    (tmp_path / "identity.key").write_text(settings.key_secrets[0].get_secret_value() + "\n")
    env = _clean_env(
        MAINSTAY_POSTGRES_DSN=settings.postgres.dsn,
        IDENTITY_KEY_SECRET_FILE=str(tmp_path / "identity.key"),
    )

    code, stdout, stderr = await _cli(
        "admin-token", "--out", str(out), "--scope", "identity:admin memory:read", env=env
    )
    assert code == 0, stdout + stderr
    assert stdout.startswith(f"admin token written: {out}")
    principal = await _verify(identity, _read(out))
    assert principal.scopes == {"identity:admin", "memory:read"}
    assert (principal.subject, principal.tenant) == ("admin", "default")

    code, stdout, _ = await _cli(
        "admin-token",
        "--out",
        str(out),
        "--scope",
        "memory:read",
        "--scope",
        "identity:admin",
        env=env,
    )
    assert code == 0
    assert stdout.startswith(f"admin token kept: {out}")

    code, _, stderr = await _cli("admin-token", "--out", str(out), "--ttl-s", "90000", env=env)
    assert code == 1
    assert "--ttl-s 90000 exceeds IDENTITY_OPERATOR_TOKEN_TTL_S (86400)" in stderr


async def test_the_command_fails_clearly_without_a_secret_or_a_database(tmp_path: Path) -> None:
    out = tmp_path / "admin.token"

    code, _, stderr = await _cli("admin-token", "--out", str(out), env=_clean_env())
    assert code == 1
    assert "no key secret: set IDENTITY_KEY_SECRETS or IDENTITY_KEY_SECRET_FILE" in stderr

    unreachable = _clean_env(
        MAINSTAY_POSTGRES_DSN="postgresql://postgres:hunter2@127.0.0.1:1/postgres",
        IDENTITY_KEY_SECRETS=json.dumps(["0" * 43 + "="]),
    )
    code, _, stderr = await _cli("admin-token", "--out", str(out), env=unreachable)
    assert code == 1
    assert "cannot reach the identity database at postgresql://postgres:***@127.0.0.1:1" in stderr
    assert "hunter2" not in stderr
    assert "Traceback" not in stderr
    assert not out.exists()
