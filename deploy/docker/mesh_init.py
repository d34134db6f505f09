"""The secrets docker-compose.yml's mesh needs, made the way ``./dev up`` makes them.

Two one-shot steps, both run in the identity image:

``keys DIR``
    Before anything starts: a Fernet key in ``DIR/identity.key`` (it encrypts the
    identity service's signing keys at rest, ``IDENTITY_KEY_SECRET_FILE``) and in
    ``DIR/vault.key`` (the tools gateway's credential vault,
    ``TOOLS_GATEWAY_VAULT_KEY_FILE``). A key already there is kept.

``mail-credentials --identity-url URL --dir DIR SERVICE...``
    Once the identity service is ready, with the identity service's own
    environment (database, key secret): signs ``DIR/admin.token`` with
    ``python -m mainstay_identity.bootstrap admin-token``, then registers a
    ``service`` principal named after each SERVICE in the ``default`` tenant and
    writes ``default/<service>:<client secret>`` to ``DIR/<service>.txt``, the file
    the service's ``*_MAIL_CREDENTIALS_FILE`` / ``LEDGER_APPROVAL_CREDENTIALS_FILE``
    names. A file whose secret still gets a token is kept, so a restart of the
    stack changes nothing.
"""

from __future__ import annotations

import argparse
import base64
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["ensure_fernet_key", "main"]

TENANT = "default"
"""The tenant the admin token administers, as in ``./dev up``."""


def _write_private(path: Path, data: str) -> None:
    """Write ``data`` to ``path`` (mode 0600) atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(data)
    partial.replace(path)


def ensure_fernet_key(path: Path) -> bool:
    """Write a new Fernet key to ``path`` unless one is there; whether it wrote one."""
    if path.is_file() and path.read_text(encoding="utf-8").strip():
        return False
    # A Fernet key is the URL-safe base64 of 32 random bytes.
    _write_private(path, base64.urlsafe_b64encode(os.urandom(32)).decode("ascii") + "\n")
    return True


def _keys(directory: Path) -> int:
    for name in ("identity.key", "vault.key"):
        path = directory / name
        print(f"{'wrote' if ensure_fernet_key(path) else 'kept'} {path}")
    return 0


def _wait_ready(http: Any, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            ready = http.get("/readyz").status_code == 200
        except Exception:  # noqa: BLE001 - still starting: any transport error
            ready = False
        if ready:
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"the identity service was not ready within {timeout_s:.0f}s")
        time.sleep(1.0)


def _still_good(http: Any, path: Path) -> bool:
    try:
        client_id, sep, secret = path.read_text(encoding="utf-8").strip().partition(":")
    except FileNotFoundError:
        return False
    if not sep:
        return False
    answer = http.post(
        "/oauth/token",
        data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret},
    )
    return bool(answer.status_code == 200)


def _check(answer: Any, doing: str) -> Any:
    if answer.status_code >= 300:
        raise SystemExit(f"{doing} was refused ({answer.status_code}): {answer.text[:300]}")
    return answer.json()


def _mail_credentials(identity_url: str, directory: Path, services: list[str]) -> int:
    import httpx  # noqa: PLC0415 - only in the image

    admin_token = directory / "admin.token"
    with httpx.Client(base_url=identity_url, timeout=30.0, trust_env=False) as http:
        _wait_ready(http, timeout_s=120.0)
        subprocess.run(  # noqa: S603 - our own interpreter and module, fixed arguments
            [
                *(sys.executable, "-m", "mainstay_identity.bootstrap", "admin-token"),
                *("--out", str(admin_token), "--tenant", TENANT),
            ],
            check=True,
        )
        admin = {"Authorization": f"Bearer {admin_token.read_text(encoding='utf-8').strip()}"}
        for service in services:
            path = directory / f"{service}.txt"
            if _still_good(http, path):
                print(f"kept {path} ({service} mails as {TENANT}/{service})")
                continue
            principal = f"/v1/tenants/{TENANT}/principals/{service}"
            body = {"kind": "service", "description": f"the {service} service mailing humans"}
            _check(http.put(principal, json=body, headers=admin), f"registering {service}")
            secret = _check(http.post(f"{principal}/secret", headers=admin), f"{service}'s secret")
            _write_private(path, f"{secret['client_id']}:{secret['client_secret']}\n")
            print(f"wrote {path} ({service} mails as {TENANT}/{service})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    steps = parser.add_subparsers(dest="step", required=True)
    keys = steps.add_parser("keys", help="the Fernet keys of identity and the tools gateway")
    keys.add_argument("directory", type=Path)
    mail = steps.add_parser("mail-credentials", help="client credentials of the mailers")
    mail.add_argument("--identity-url", required=True)
    mail.add_argument("--dir", type=Path, required=True)
    mail.add_argument("services", nargs="+")
    args = parser.parse_args(argv)
    if args.step == "keys":
        return _keys(args.directory)
    return _mail_credentials(args.identity_url, args.dir, args.services)


if __name__ == "__main__":
    sys.exit(main())
