"""Client credentials of the services that mail humans (escalations, approval requests).

Mail goes through the identity service as a principal of the recipient's
tenant, so each of :data:`~mainstay_common.devstack._services.MAILERS` needs
one. Once the identity service is ready and has signed ``admin.token``, ``up``
registers a ``service`` principal named after each mailer in the ``default``
tenant (the one the admin token administers), gives it a client secret, and
writes ``default/<service>:<secret>`` to ``<home>/credentials/<service>.txt``
(mode 0600), which the service's environment then names. A file whose secret
still gets a token is kept, so a second ``up`` changes nothing; a stale one
(the identity database was reset) is replaced.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import httpx

from mainstay_common.devstack._home import StackError
from mainstay_common.devstack._services import MAIL_TENANT, MAILERS, mail_credentials_file
from mainstay_common.files import write_atomically

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from pathlib import Path

__all__ = ["ensure_mail_credentials"]


async def ensure_mail_credentials(
    identity_url: str,
    *,
    home: Path,
    admin_token: Path,
    services: Iterable[str],
    report: Callable[[str], object],
    timeout_s: float = 30.0,
) -> list[Path]:
    """Keep or write the credentials file of every mailer among ``services``; their paths."""
    mailers = [name for name in services if name in MAILERS]
    if not mailers:
        return []
    token = (await asyncio.to_thread(admin_token.read_text, encoding="utf-8")).strip()
    admin = {"Authorization": f"Bearer {token}"}
    written: list[Path] = []
    # trust_env=False: a proxy from the environment must not sit in front of loopback.
    async with httpx.AsyncClient(base_url=identity_url, timeout=timeout_s, trust_env=False) as http:
        for service in mailers:
            path = mail_credentials_file(home, service)
            try:
                if await _still_good(http, path):
                    report(f"credentials: kept {path} ({service} mails as {MAIL_TENANT}/{service})")
                else:
                    await _provision(http, admin, service, path)
                    report(
                        f"credentials: wrote {path} ({service} mails as {MAIL_TENANT}/{service})"
                    )
            except httpx.HTTPError as exc:
                raise StackError(
                    f"credentials: cannot register {MAIL_TENANT}/{service} at {identity_url}: {exc}"
                ) from exc
            written.append(path)
    return written


async def _still_good(http: httpx.AsyncClient, path: Path) -> bool:
    """Whether the file at ``path`` holds a secret the identity service takes."""
    try:
        line = (await asyncio.to_thread(path.read_text, encoding="utf-8")).strip()
    except FileNotFoundError:
        return False
    client_id, sep, secret = line.partition(":")
    if not sep:
        return False
    answer = await http.post(
        "/oauth/token",
        data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret},
    )
    return answer.status_code == 200


async def _provision(
    http: httpx.AsyncClient, admin: dict[str, str], service: str, path: Path
) -> None:
    principal = f"/v1/tenants/{MAIL_TENANT}/principals/{service}"
    body = {
        "kind": "service",
        "description": f"the {service} service mailing humans (registered by ./dev up)",
    }
    put = await http.put(principal, json=body, headers=admin)
    _raise_for(put, f"registering {MAIL_TENANT}/{service}")
    answer = await http.post(f"{principal}/secret", headers=admin)
    _raise_for(answer, f"a client secret for {MAIL_TENANT}/{service}")
    line = f"{answer.json()['client_id']}:{answer.json()['client_secret']}\n"
    await asyncio.to_thread(_write, path, line.encode())


def _raise_for(answer: httpx.Response, doing: str) -> None:
    if answer.status_code >= 300:
        raise StackError(
            f"credentials: {doing} was refused ({answer.status_code}): {answer.text[:300]}"
        )


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomically(path, data, mode=0o600)
