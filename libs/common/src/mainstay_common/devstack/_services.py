"""Discovering the mesh's services and the environment each one starts with.

A service is any folder ``services/<svc>/`` that holds
``src/mainstay_<svc with underscores>/__main__.py``; the stack runs it as
``python -m mainstay_<svc>`` with the interpreter running the stack.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

__all__ = ["ServiceSpec", "discover_services", "service_environment"]


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


def service_environment(
    spec: ServiceSpec,
    base: Mapping[str, str],
    *,
    home: Path,
    kafka_bootstrap: str,
    postgres_dsn: str,
    topic_prefix: str,
) -> dict[str, str]:
    """The environment of one service process: the caller's plus the stack's addresses."""
    env = dict(base)
    env["MAINSTAY_KAFKA_BOOTSTRAP"] = kafka_bootstrap
    env["MAINSTAY_POSTGRES_DSN"] = postgres_dsn
    env["MAINSTAY_HOME"] = str(home)
    if topic_prefix:
        env["MAINSTAY_KAFKA_TOPIC_PREFIX"] = topic_prefix
    # The development credentials live in the home; a service started from any
    # directory must find them unless the developer pointed elsewhere.
    env.setdefault("MAINSTAY_AUTH_JWKS_FILE", str(home / "jwks.json"))
    env.setdefault("TOOLS_GATEWAY_VAULT_KEY_FILE", str(home / "vault.key"))
    env.setdefault("IDENTITY_KEY_SECRET_FILE", str(home / "identity.key"))
    # Workspace services are installed in the environment already; the src
    # folder on the path also runs a service that is not (yet) installed.
    env["PYTHONPATH"] = os.pathsep.join(
        part for part in (str(spec.src), env.get("PYTHONPATH", "")) if part
    )
    env["PYTHONUNBUFFERED"] = "1"  # logs reach the log file as they are written
    return env
