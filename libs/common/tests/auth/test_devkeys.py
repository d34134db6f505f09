"""Development secrets: created once, kept, private; the former local signing key goes away."""

from __future__ import annotations

import stat
from typing import TYPE_CHECKING

import pytest
from cryptography.fernet import Fernet

from mainstay_common.auth import TokenSigner, TokenVerifier
from mainstay_common.auth.devkeys import ensure_dev_secrets
from mainstay_common.errors import DependencyUnavailable
from mainstay_common.settings import AuthSettings

if TYPE_CHECKING:
    from pathlib import Path


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_both_key_files_are_usable_fernet_keys_readable_only_by_the_owner(
    tmp_path: Path,
) -> None:
    secrets = ensure_dev_secrets(tmp_path / "home")

    assert secrets.vault_key_path == tmp_path / "home" / "vault.key"
    assert secrets.identity_key_path == tmp_path / "home" / "identity.key"
    for path in (secrets.vault_key_path, secrets.identity_key_path):
        assert _mode(path) == 0o600
        Fernet(path.read_text().strip().encode())  # raises unless it is a Fernet key
    assert secrets.vault_key_path.read_text() != secrets.identity_key_path.read_text()
    assert secrets.removed == ()


def test_a_second_call_changes_nothing(tmp_path: Path) -> None:
    ensure_dev_secrets(tmp_path)
    snapshot = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    ensure_dev_secrets(tmp_path)

    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == snapshot


def test_no_signing_key_jwks_or_token_is_written(tmp_path: Path) -> None:
    ensure_dev_secrets(tmp_path)

    assert sorted(p.name for p in tmp_path.iterdir()) == ["identity.key", "vault.key"]


def test_the_former_local_signing_key_and_jwks_are_removed(tmp_path: Path) -> None:
    signer = TokenSigner.generate()
    (tmp_path / "signing-key.pem").write_bytes(signer.private_pem())
    (tmp_path / "jwks.json").write_text("{}")
    (tmp_path / "admin.token").write_text("old\n")

    secrets = ensure_dev_secrets(tmp_path)

    assert sorted(p.name for p in secrets.removed) == ["jwks.json", "signing-key.pem"]
    assert not (tmp_path / "signing-key.pem").exists()
    assert not (tmp_path / "jwks.json").exists()
    # The token is the identity service's business: its bootstrap replaces it.
    assert (tmp_path / "admin.token").read_text() == "old\n"


def test_an_existing_key_is_kept_and_a_loose_mode_tightened(tmp_path: Path) -> None:
    key = Fernet.generate_key()
    (tmp_path / "identity.key").write_bytes(key + b"\n")
    (tmp_path / "identity.key").chmod(0o644)

    ensure_dev_secrets(tmp_path)

    assert (tmp_path / "identity.key").read_bytes() == key + b"\n"
    assert _mode(tmp_path / "identity.key") == 0o600


async def test_without_a_jwks_verification_fails_as_an_outage_naming_the_file(
    tmp_path: Path,
) -> None:
    # Nothing writes the default jwks_file any more: a service started without
    # MAINSTAY_AUTH_JWKS_URL still starts, and each verification says what is missing.
    settings = AuthSettings(jwks_file=str(tmp_path / "jwks.json"), jwks_url=None)
    verifier = TokenVerifier.from_settings(settings)
    token = TokenSigner.generate().mint(subject="admin", tenant="default", scopes=["*"])

    with pytest.raises(DependencyUnavailable, match=r"cannot read JWKS file .*jwks\.json"):
        await verifier.verify(token)
