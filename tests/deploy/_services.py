"""What the deployment files must agree with: each service's settings class and module,
the environment variables it reads, and the wiring the local stack gives it."""

from __future__ import annotations

import importlib
import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic_settings import BaseSettings

from mainstay_common.devstack import _services as devstack

__all__ = [
    "FILE_ALTERNATIVES",
    "REPO",
    "SERVICES",
    "Service",
    "accepted_env",
    "required_env",
    "value_at",
]

REPO = Path(__file__).resolve().parents[2]

SERVICES = ("memory", "tools-gateway", "identity", "ledger", "supervisor", "execution")
"""The six services; each has an image, a compose service and a Deployment of this name."""

# The local stack sets these for reasons no container has: its own state folder,
# the interpreter's path and buffering, and identity's port moved off its default.
_STACK_ONLY = {
    "MAINSTAY_HOME": "the local stack's state folder; no service reads it",
    "PYTHONPATH": "the local stack runs services from their src folders",
    "PYTHONUNBUFFERED": "set in every image",
    "IDENTITY_HTTP_PORT": "moves identity off 8103 on a crowded machine; containers keep it",
}

FILE_ALTERNATIVES = {
    "IDENTITY_KEY_SECRET_FILE": "IDENTITY_KEY_SECRETS",
    "TOOLS_GATEWAY_VAULT_KEY_FILE": "TOOLS_GATEWAY_VAULT_KEYS",
    "EXECUTION_MAIL_CREDENTIALS_FILE": "EXECUTION_MAIL_CREDENTIALS",
    "LEDGER_APPROVAL_CREDENTIALS_FILE": "LEDGER_APPROVAL_CREDENTIALS",
    "SUPERVISOR_MAIL_CREDENTIALS_FILE": "SUPERVISOR_MAIL_CREDENTIALS",
}
"""A secret given as a file, and the same secret given inline; either one will do."""


@dataclass(frozen=True)
class Service:
    name: str

    @property
    def module(self) -> str:
        return "mainstay_" + self.name.replace("-", "_")

    @property
    def settings_class(self) -> type[BaseSettings]:
        settings = importlib.import_module(f"{self.module}.settings")
        classes = [
            value
            for value in vars(settings).values()
            if isinstance(value, type)
            and issubclass(value, BaseSettings)
            and value.__module__ == settings.__name__
            and "service_name" in value.model_fields
        ]
        assert len(classes) == 1, f"{self.module}.settings: one service settings class, {classes}"
        return classes[0]

    @property
    def folder(self) -> Path:
        return REPO / "services" / self.name

    @property
    def http_port(self) -> int:
        return int(self.settings_class.model_fields["http_port"].default)

    @property
    def grpc_port(self) -> int | None:
        field = self.settings_class.model_fields.get("grpc_port")
        return None if field is None else int(field.default)

    @property
    def bus_name(self) -> str:
        """The name its consumer groups start with (``self._bus(<name>, ...)``), which
        is the ``service`` label of the supervisor's scaling metrics."""
        app = (self.folder / "src" / self.module / "app.py").read_text(encoding="utf-8")
        names = set(re.findall(r'self\._bus\(\s*"([^"]+)"', app))
        assert len(names) == 1, f"{self.name}: one self._bus(...) in app.py, found {names}"
        return str(names.pop())


def _nested_settings(annotation: Any) -> type[BaseSettings] | None:
    candidates = [annotation, *typing.get_args(annotation)]
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, BaseSettings):
            return candidate
    return None


def accepted_env(settings: type[BaseSettings]) -> dict[str, tuple[str, ...]]:
    """Every environment variable ``settings`` reads, with the attribute path it sets.

    pydantic-settings reads ``<env_prefix><field>`` for each field (a nested
    group's too, as JSON). A nested group that is itself a ``BaseSettings`` and
    is not given that way is built by its default factory, which reads its own
    ``env_prefix``; with an ``env_nested_delimiter`` its fields are also read as
    ``<env_prefix><field><delimiter><subfield>``.
    """
    config = settings.model_config
    if not config.get("case_sensitive", False):
        prefix = str(config.get("env_prefix", "")).upper()
    else:  # pragma: no cover - no Mainstay settings class is case sensitive
        raise AssertionError(f"{settings.__name__}: case-sensitive settings are not handled")
    delimiter = config.get("env_nested_delimiter")
    names: dict[str, tuple[str, ...]] = {}
    for field_name, info in settings.model_fields.items():
        unhandled = f"{settings.__name__}.{field_name}: aliases are not handled by this walk"
        assert info.alias is None, unhandled
        assert info.validation_alias is None, unhandled
        names[(prefix + field_name).upper()] = (field_name,)
        nested = _nested_settings(info.annotation)
        if nested is None:
            continue
        for name, path in accepted_env(nested).items():
            names.setdefault(name, (field_name, *path))
        if delimiter:
            for sub_name in nested.model_fields:
                joined = f"{prefix}{field_name}{delimiter}{sub_name}".upper()
                names.setdefault(joined, (field_name, sub_name))
    return names


def value_at(settings: BaseSettings, path: tuple[str, ...]) -> Any:
    value: Any = settings
    for part in path:
        value = getattr(value, part)
    return value


def _required_fields(settings: type[BaseSettings]) -> set[str]:
    prefix = str(settings.model_config.get("env_prefix", "")).upper()
    required: set[str] = set()
    for field_name, info in settings.model_fields.items():
        nested = _nested_settings(info.annotation)
        if info.is_required() and nested is None:
            required.add((prefix + field_name).upper())
        elif nested is not None:
            required |= _required_fields(nested)
    return required


def required_env(service: Service, home: Path) -> dict[str, str]:
    """What a container of ``service`` must be given, with why.

    The settings fields without a default, and every variable the local stack
    (``devstack.service_environment``) sets that the service reads: its wiring
    to the broker, PostgreSQL, the identity service and its peers.
    """
    spec = next(spec for spec in devstack.discover_services(REPO) if spec.name == service.name)
    # The stack names a mailer's credentials file only once it exists.
    credentials = devstack.mail_credentials_file(home, service.name)
    credentials.parent.mkdir(parents=True, exist_ok=True)
    credentials.write_text("default/x:y\n", encoding="utf-8")
    environment = devstack.service_environment(
        spec,
        {},
        home=home,
        kafka_bootstrap="broker:9092",
        postgres_dsn="postgresql://postgres@db/postgres",
        topic_prefix="",
        identity_port=devstack.DEFAULT_IDENTITY_PORT,
    )
    accepted = accepted_env(service.settings_class)
    wanted = dict.fromkeys(
        _required_fields(service.settings_class), "required by the settings class"
    )
    for name in environment:
        if name in _STACK_ONLY or name not in accepted:
            continue
        wanted[name] = "set by the local stack (devstack service_environment)"
    return wanted
