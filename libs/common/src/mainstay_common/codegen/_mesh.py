"""What each service of the mesh is, gathered from its code and contracts.

A service is a folder ``services/<svc>/`` with a ``pyproject.toml`` and one
package under ``src/``. Its facts come from where they are declared, so the
documents built from them cannot drift from the code:

* what it owns: the ``description`` of its ``pyproject.toml``;
* topics in and out: its AsyncAPI document (the consumer groups, retry mode and
  DLQ of every subscriber, and what it declares it publishes);
* RPCs: ``schemas/proto/mainstay/<pkg>/``;
* HTTP routes: its router declarations (see ``_routes``);
* settings: its ``settings.py`` class (the one subclass of ``ServiceSettings``);
* its PostgreSQL schema: ``SCHEMA = "..."`` in its ``app.py``.

Only the settings module is imported (like the AsyncAPI hook, at generation
time and never when mainstay_common itself is imported); everything else is read.
"""

from __future__ import annotations

import ast
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from mainstay_common.codegen._asyncapi import SERVICES_DIR, import_service_module
from mainstay_common.codegen._errors import CodegenError
from mainstay_common.codegen._proto import PROTO_SRC
from mainstay_common.codegen._routes import Route, http_routes
from mainstay_common.codegen._rpcs import Rpc, service_rpcs
from mainstay_common.codegen._settings_doc import SettingRow, settings_rows
from mainstay_common.settings import ServiceSettings

if TYPE_CHECKING:
    from pathlib import Path

    from mainstay_contracts import TopicRegistry

__all__ = ["Consumer", "Service", "mesh_services", "service_dirs"]

_PORT_FIELDS: Final = ("grpc_port", "http_port")
_TITLE: Final = re.compile(r"^Mainstay [^:]{1,60}:\s*")


@dataclass(frozen=True)
class Consumer:
    """One subscriber: the topic, its consumer group, ``tiers`` or ``blocking``, its DLQ."""

    topic: str
    group: str
    retry: str
    retry_topics: tuple[str, ...]
    dead_letters: str


@dataclass
class Service:
    name: str
    package: str
    summary: str = ""
    owners: tuple[str, ...] = ()
    consumes: list[Consumer] = field(default_factory=list)
    produces: list[str] = field(default_factory=list)
    rpcs: list[Rpc] = field(default_factory=list)
    routes: list[Route] = field(default_factory=list)
    settings: list[SettingRow] = field(default_factory=list)
    ports: dict[str, int] = field(default_factory=dict)
    schema: str | None = None

    @property
    def consumed_topics(self) -> list[str]:
        return sorted({consumer.topic for consumer in self.consumes})


def service_dirs(root: Path) -> list[Path]:
    """The service folders: ``services/<svc>/`` holding a ``pyproject.toml``."""
    return sorted(path.parent for path in (root / SERVICES_DIR).glob("*/pyproject.toml"))


def mesh_services(
    root: Path, registry: TopicRegistry, documents: Mapping[str, Mapping[str, object]]
) -> list[Service]:
    """The facts of every service at ``root``, by service name."""
    owners = sorted({spec.owner for spec in registry})
    services: list[Service] = []
    for directory in service_dirs(root):
        name = directory.name
        package_dir = _package_dir(directory)
        service = Service(name=name, package=package_dir.name)
        service.summary = _summary(directory)
        service.owners = tuple(
            owner for owner in owners if owner == name or name.startswith(f"{owner}-")
        )
        document = documents.get(name)
        if document is not None:
            service.consumes, service.produces = _operations(document, where=name)
        packages = {name.replace("-", "_"), *service.owners}
        service.rpcs = service_rpcs(root / PROTO_SRC, packages)
        service.routes = http_routes(package_dir)
        settings = _settings_class(package_dir)
        if settings is not None:
            service.settings = settings_rows(settings)
            service.ports = {
                port: default
                for port in _PORT_FIELDS
                if port in settings.model_fields
                and isinstance(default := settings.model_fields[port].default, int)
            }
        service.schema = _schema(package_dir / "app.py")
        services.append(service)
    return services


def _package_dir(directory: Path) -> Path:
    packages = sorted(init.parent for init in (directory / "src").glob("*/__init__.py"))
    if len(packages) != 1:
        found = ", ".join(package.name for package in packages) or "none"
        raise CodegenError(f"{directory}: expected one package under src/, found {found}")
    return packages[0]


def _summary(directory: Path) -> str:
    try:
        with (directory / "pyproject.toml").open("rb") as file:
            project = tomllib.load(file).get("project", {})
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CodegenError(f"{directory}/pyproject.toml: {exc}") from exc
    description = str(project.get("description", "")).strip()
    return _TITLE.sub("", description)


def _settings_class(package_dir: Path) -> type[ServiceSettings] | None:
    if not (package_dir / "settings.py").is_file():
        return None
    module = import_service_module(f"{package_dir.name}.settings", package_dir.parent)
    found = [
        value
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, ServiceSettings)
        and value.__module__ == module.__name__
    ]
    if len(found) != 1:
        names = ", ".join(value.__qualname__ for value in found) or "none"
        raise CodegenError(
            f"{module.__name__}: expected one subclass of ServiceSettings, found {names}"
        )
    return found[0]


def _schema(app: Path) -> str | None:
    if not app.is_file():
        return None
    tree = ast.parse(app.read_text(encoding="utf-8"), filename=str(app))
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and any(
                isinstance(target, ast.Name) and target.id == "SCHEMA" for target in node.targets
            )
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            return node.value.value
    return None


def _operations(document: Mapping[str, object], *, where: str) -> tuple[list[Consumer], list[str]]:
    channels = _mapping(document.get("channels", {}), f"{where}: channels")
    operations = _mapping(document.get("operations", {}), f"{where}: operations")
    consumers: list[Consumer] = []
    produced: set[str] = set()
    for name, raw in operations.items():
        operation = _mapping(raw, f"{where}: operation {name}")
        topic = _topic(operation, channels, where=f"{where}: operation {name}")
        if operation.get("action") == "send":
            produced.add(topic)
        elif operation.get("action") == "receive":
            retry_topics = operation.get("x-retry-topics", [])
            consumers.append(
                Consumer(
                    topic=topic,
                    group=str(operation.get("x-consumer-group", "")),
                    retry=str(operation.get("x-retry", "")),
                    retry_topics=tuple(str(t) for t in _sequence(retry_topics)),
                    dead_letters=str(operation.get("x-dead-letter-topic", "")),
                )
            )
    consumers.sort(key=lambda consumer: (consumer.topic, consumer.group))
    return consumers, sorted(produced)


def _topic(operation: Mapping[str, Any], channels: Mapping[str, Any], *, where: str) -> str:
    reference = _mapping(operation.get("channel", {}), where).get("$ref", "")
    key = str(reference).rsplit("/", 1)[-1]
    if key not in channels:
        raise CodegenError(f"AsyncAPI {where}: channel {reference!r} is not in the document")
    channel = _mapping(channels[key], where)
    return str(channel.get("address") or key)


def _mapping(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise CodegenError(f"AsyncAPI {where}: expected a mapping, got {type(value).__name__}")
    return value


def _sequence(value: object) -> list[object]:
    return list(value) if isinstance(value, list | tuple) else []
