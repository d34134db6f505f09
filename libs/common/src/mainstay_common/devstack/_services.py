"""Discovering the mesh's services and the environment each one starts with.

A service is any folder ``services/<svc>/`` that holds
``src/mainstay_<svc with underscores>/__main__.py``; the stack runs it as
``python -m mainstay_<svc>`` with the interpreter running the stack.

The identity service (``services/identity``) starts first: the others verify
tokens against its JWKS and read its revocation feed, and ``admin.token`` is
signed by it.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mainstay_common.devstack._home import StackError

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

__all__ = [
    "DEFAULT_IDENTITY_PORT",
    "IDENTITY",
    "ServiceSpec",
    "discover_services",
    "identity_base_url",
    "identity_port",
    "service_environment",
]

IDENTITY = "identity"
"""The service that signs tokens; the stack starts it before the others."""
DEFAULT_IDENTITY_PORT = 8103
_IDENTITY_PORT_ENV = "IDENTITY_HTTP_PORT"


@dataclass(frozen=True)
class ServiceSpec:
    """One runnable service folder."""

    name: str
    """The folder name, e.g. ``tools-gateway``; also the name of its log and pid record."""
    module: str
    """The package run with ``python -m``, e.g. ``mainstay_tools_gateway``."""
    src: Path
    """The ``src`` folder that holds the package."""

    def command(self) -> list[str]:
        return [sys.executable, "-m", self.module]


def discover_services(repo_root: Path) -> list[ServiceSpec]:
    """Every runnable service under ``repo_root/services``, sorted by name."""
    services_dir = repo_root / "services"
    if not services_dir.is_dir():
        return []
    found: list[ServiceSpec] = []
    for folder in sorted(services_dir.iterdir()):
        if not folder.is_dir():
            continue
        module = "mainstay_" + folder.name.replace("-", "_")
        src = folder / "src"
        if (src / module / "__main__.py").is_file():
            found.append(ServiceSpec(name=folder.name, module=module, src=src))
    return found


def identity_port(environ: Mapping[str, str]) -> int:
    """The identity service's HTTP port: ``IDENTITY_HTTP_PORT``, else 8103."""
    raw = environ.get(_IDENTITY_PORT_ENV, "").strip()
    if not raw:
        return DEFAULT_IDENTITY_PORT
    try:
        port = int(raw)
    except ValueError:
        port = -1
    if not 0 < port < 65536:
        raise StackError(f"{_IDENTITY_PORT_ENV}={raw!r} is not a TCP port (1-65535)")
    return port


def identity_base_url(port: int) -> str:
    """Where the stack's identity service answers HTTP."""
    return f"http://127.0.0.1:{port}"


def service_environment(
    spec: ServiceSpec,
    base: Mapping[str, str],
    *,
    home: Path,
    kafka_bootstrap: str,
    postgres_dsn: str,
    topic_prefix: str,
    identity_port: int | None = None,
) -> dict[str, str]:
    """The environment of one service process: the caller's plus the stack's addresses.

    ``identity_port`` is where the stack's identity service listens (on
    loopback); every service then verifies tokens against its JWKS and reads its
    revocation feed, unless the caller's environment names other ones.
    """
    env = dict(base)
    env["MAINSTAY_KAFKA_BOOTSTRAP"] = kafka_bootstrap
    env["MAINSTAY_POSTGRES_DSN"] = postgres_dsn
    env["MAINSTAY_HOME"] = str(home)
    if topic_prefix:
        env["MAINSTAY_KAFKA_TOPIC_PREFIX"] = topic_prefix
    if identity_port is not None:
        identity_url = identity_base_url(identity_port)
        env[_IDENTITY_PORT_ENV] = str(identity_port)
        # A JWKS file the developer names is their choice too (a URL would take precedence).
        if "MAINSTAY_AUTH_JWKS_FILE" not in env:
            env.setdefault("MAINSTAY_AUTH_JWKS_URL", f"{identity_url}/.well-known/jwks.json")
        env.setdefault("MAINSTAY_AUTH_REVOCATIONS_URL", f"{identity_url}/v1/revocations")
    # The development secrets live in the home; a service started from any
    # directory must find them unless the developer pointed elsewhere.
    env.setdefault("TOOLS_GATEWAY_VAULT_KEY_FILE", str(home / "vault.key"))
    env.setdefault("IDENTITY_KEY_SECRET_FILE", str(home / "identity.key"))
    # Workspace services are installed in the environment already; the src
    # folder on the path also runs a service that is not (yet) installed.
    env["PYTHONPATH"] = os.pathsep.join(
        part for part in (str(spec.src), env.get("PYTHONPATH", "")) if part
    )
    env["PYTHONUNBUFFERED"] = "1"  # logs reach the log file as they are written
    return env
