"""Development credentials: created once, reused, renewed, and accepted by the verifier."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import jwt
from cryptography.fernet import Fernet

from mainstay_common.auth import TokenVerifier
from mainstay_common.auth.devkeys import ensure_dev_credentials
from mainstay_common.settings import AuthSettings

if TYPE_CHECKING:
    from pathlib import Path


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_the_admin_token_verifies_under_default_auth_settings(tmp_path: Path) -> None:
    home = tmp_path / ".mainstay"

    creds = ensure_dev_credentials(home)

    verifier = TokenVerifier.from_settings(AuthSettings(jwks_file=str(creds.jwks_path)))
    principal = await verifier.verify(creds.admin_token_path.read_text().strip())
    assert principal.subject == "admin"
    assert principal.tenant == "default"
    assert principal.has_scope("memory:write")
    assert principal.expires_at - datetime.now(UTC) > timedelta(days=29)
    assert creds.jwks_path == home / "jwks.json"


def test_files_and_modes(tmp_path: Path) -> None:
    creds = ensure_dev_credentials(tmp_path / "home")

    assert _mode(creds.private_key_path) == 0o600
    assert _mode(creds.admin_token_path) == 0o600
    assert _mode(creds.vault_key_path) == 0o600
    vault_key = creds.vault_key_path.read_text()
    Fernet(vault_key.strip().encode())  # a usable key for the tools gateway's vault
    assert ensure_dev_credentials(tmp_path / "home").vault_key_path.read_text() == vault_key
    assert creds.private_key_path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    (jwk,) = json.loads(creds.jwks_path.read_text())["keys"]
    assert jwk == {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": jwk["x"],
        "kid": creds.kid,
        "alg": "EdDSA",
        "use": "sig",
    }
    assert "d" not in jwk
    assert creds.admin_token not in repr(creds)


def test_a_second_call_changes_nothing(tmp_path: Path) -> None:
    first = ensure_dev_credentials(tmp_path)
    snapshot = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    second = ensure_dev_credentials(tmp_path)

    assert second.kid == first.kid
    assert second.admin_token == first.admin_token
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == snapshot


def test_the_token_is_reminted_within_a_day_of_expiry(tmp_path: Path) -> None:
    first = ensure_dev_credentials(tmp_path)

    almost_expired = datetime.now(UTC) + timedelta(days=29, hours=1)
    renewed = ensure_dev_credentials(tmp_path, now=almost_expired)

    assert renewed.kid == first.kid
    assert renewed.admin_token != first.admin_token
    claims = jwt.decode(renewed.admin_token, options={"verify_signature": False})
    assert claims["exp"] == int(
        (almost_expired.replace(microsecond=0) + timedelta(days=30)).timestamp()
    )


def test_a_token_from_another_key_is_replaced_and_a_stale_jwks_rewritten(tmp_path: Path) -> None:
    first = ensure_dev_credentials(tmp_path)
    first.private_key_path.unlink()
    first.jwks_path.write_text('{"keys": []}')

    second = ensure_dev_credentials(tmp_path)

    assert second.kid != first.kid
    assert second.admin_token != first.admin_token
    assert [k["kid"] for k in json.loads(second.jwks_path.read_text())["keys"]] == [second.kid]


def test_a_loose_key_file_mode_is_tightened(tmp_path: Path) -> None:
    creds = ensure_dev_credentials(tmp_path)
    creds.private_key_path.chmod(0o644)

    ensure_dev_credentials(tmp_path)

    assert _mode(creds.private_key_path) == 0o600
