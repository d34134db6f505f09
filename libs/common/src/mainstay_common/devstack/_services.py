"""Discovering the mesh's services and the environment each one starts with.

A service is any folder ``services/<svc>/`` that holds
``src/mainstay_<svc with underscores>/__main__.py``; the stack runs it as
``python -m mainstay_<svc>`` with the interpreter running the stack.

The identity service (``services/identity``) starts first: the others verify
tokens against its JWKS and read its revocation feed, and ``admin.token`` is
signed by it. The services that mail humans through it (:data:`MAILERS`) each
get a principal of their own in the ``default`` tenant, whose client
credentials the stack keeps under ``<home>/credentials/``.

:func:`service_environment` is the one place that says what a service process
starts with: the stack's addresses for every service, then what each service
needs to reach the others (:func:`_mesh_settings`).
"""

from __future__ import annotations

import json
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
    "DEFAULT_MEMORY_GRPC_PORT",
    "DEMO_MODEL_CREDENTIAL",
    "IDENTITY",
    "MAILERS",
    "MAIL_TENANT",
    "ServiceSpec",
    "discover_services",
    "identity_base_url",
    "identity_port",
    "mail_credentials_file",
    "memory_target",
    "service_environment",
]

IDENTITY = "identity"
"""The service that signs tokens; the stack starts it before the others."""
DEFAULT_IDENTITY_PORT = 8103
_IDENTITY_PORT_ENV = "IDENTITY_HTTP_PORT"
DEFAULT_MEMORY_GRPC_PORT = 50051
_MEMORY_GRPC_PORT_ENV = "MEMORY_GRPC_PORT"

MAILERS: dict[str, str] = {
    "execution": "EXECUTION_MAIL_CREDENTIALS_FILE",
    "ledger": "LEDGER_APPROVAL_CREDENTIALS_FILE",
    "supervisor": "SUPERVISOR_MAIL_CREDENTIALS_FILE",
}
"""Services that mail humans through the identity service, and the setting that names
the file of their client credentials."""
DEMO_MODEL_CREDENTIAL = "demo-model"
"""The credential name ``./dev demo``'s agents give their model when ``MAINSTAY_MODEL_BASE_URL``
names a real endpoint; the stack passes ``MAINSTAY_MODEL_API_KEY`` to execution under it."""
MAIL_TENANT = "default"
"""The tenant the stack registers the mailers in: the one ``admin.token`` administers."""


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


def memory_target(environ: Mapping[str, str]) -> str:
    """The memory service's gRPC address (``host:port``): ``MEMORY_GRPC_PORT``, else 50051."""
    port = environ.get(_MEMORY_GRPC_PORT_ENV, "").strip() or str(DEFAULT_MEMORY_GRPC_PORT)
    return f"127.0.0.1:{port}"


def mail_credentials_file(home: Path, service: str) -> Path:
    """Where the stack keeps ``<tenant>/<name>:<secret>`` of ``service``'s mail principal."""
    return home / "credentials" / f"{service}.txt"


def _mesh_settings(
    service: str, environ: Mapping[str, str], *, home: Path, identity_url: str | None
) -> dict[str, str]:
    """What ``service`` needs to work with the other services of the stack."""
    wanted: dict[str, str] = {}
    if service == "ledger":
        # The execution service closes a task's hold once the ledger confirms its usage.
        wanted["LEDGER_USAGE_EVENTS"] = "true"
    if service == "execution":
        wanted["EXECUTION_MEMORY_TARGET"] = memory_target(environ)
        # `./dev demo` against a real model endpoint: the agents name this credential.
        key = environ.get("MAINSTAY_MODEL_API_KEY", "").strip()
        if key:
            wanted["EXECUTION_MODEL_KEYS"] = json.dumps([f"{DEMO_MODEL_CREDENTIAL}={key}"])
    if identity_url is not None and service in MAILERS:
        wanted[service.upper() + "_IDENTITY_URL"] = identity_url
        credentials = mail_credentials_file(home, service)
        if credentials.is_file():
            wanted[MAILERS[service]] = str(credentials)
    return wanted


_EMBEDDED_SESSION_TIMEOUT_MS = 4_000
_EMBEDDED_HEARTBEAT_MS = 1_000


def service_environment(
    spec: ServiceSpec,
    base: Mapping[str, str],
    *,
    home: Path,
    kafka_bootstrap: str,
    postgres_dsn: str,
    topic_prefix: str,
    identity_port: int | None = None,
    embedded_broker: bool = False,
) -> dict[str, str]:
    """The environment of one service process: the caller's plus the stack's addresses.

    On the embedded broker (``embedded_broker``) consumers get a 4 s session
    timeout: that broker holds a new member's join for half the session timeout,
    so the default 10 s costs a service 5 s per consumer group at start-up
    (execution has eight).

    ``identity_port`` is where the stack's identity service listens (on
    loopback); every service then verifies tokens against its JWKS and reads its
    revocation feed, unless the caller's environment names other ones. What a
    setting of the caller's environment already says is never overridden.
    """
    env = dict(base)
    identity_url = None if identity_port is None else identity_base_url(identity_port)
    env["MAINSTAY_KAFKA_BOOTSTRAP"] = kafka_bootstrap
    env["MAINSTAY_POSTGRES_DSN"] = postgres_dsn
    env["MAINSTAY_HOME"] = str(home)
    if topic_prefix:
        env["MAINSTAY_KAFKA_TOPIC_PREFIX"] = topic_prefix
    if embedded_broker:
        env.setdefault("MAINSTAY_KAFKA_SESSION_TIMEOUT_MS", str(_EMBEDDED_SESSION_TIMEOUT_MS))
        env.setdefault("MAINSTAY_KAFKA_HEARTBEAT_INTERVAL_MS", str(_EMBEDDED_HEARTBEAT_MS))
    if identity_url is not None:
        env[_IDENTITY_PORT_ENV] = str(identity_port)
        # A JWKS file the developer names is their choice too (a URL would take precedence).
        if "MAINSTAY_AUTH_JWKS_FILE" not in env:
            env.setdefault("MAINSTAY_AUTH_JWKS_URL", f"{identity_url}/.well-known/jwks.json")
        env.setdefault("MAINSTAY_AUTH_REVOCATIONS_URL", f"{identity_url}/v1/revocations")
    # The development secrets live in the home; a service started from any
    # directory must find them unless the developer pointed elsewhere.
    env.setdefault("TOOLS_GATEWAY_VAULT_KEY_FILE", str(home / "vault.key"))
    env.setdefault("IDENTITY_KEY_SECRET_FILE", str(home / "identity.key"))
    for name, value in _mesh_settings(
        spec.name, base, home=home, identity_url=identity_url
    ).items():
        env.setdefault(name, value)
    # Workspace services are installed in the environment already; the src
    # folder on the path also runs a service that is not (yet) installed.
    env["PYTHONPATH"] = os.pathsep.join(
        part for part in (str(spec.src), env.get("PYTHONPATH", "")) if part
    )
    env["PYTHONUNBUFFERED"] = "1"  # logs reach the log file as they are written
    return env
