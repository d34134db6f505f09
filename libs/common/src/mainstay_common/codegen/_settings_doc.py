"""The environment variables a pydantic-settings class reads, for the service READMEs.

Read from the class, never from an instance, so the environment of whoever
runs ``./dev gen`` cannot leak into the documents. The names follow
pydantic-settings as the services configure it (no ``env_nested_delimiter``):
a plain field is ``<env_prefix><FIELD>``; a field whose type is itself a
settings class (a group such as ``kafka: KafkaSettings``) is built by that
class's default factory and reads the group's own prefix, so
``MAINSTAY_KAFKA_BOOTSTRAP`` is the variable, not ``<SERVICE>_KAFKA_BOOTSTRAP``.
"""

from __future__ import annotations

import enum
import json
import math
import types
import typing
from dataclasses import dataclass
from typing import Any, Final, Literal, get_args, get_origin

from pydantic import BaseModel, SecretStr
from pydantic_core import PydanticUndefined
from pydantic_settings import BaseSettings

from mainstay_common.codegen._errors import CodegenError

if typing.TYPE_CHECKING:
    from pydantic.fields import FieldInfo

__all__ = ["SHARED_SETTINGS_MODULE", "SettingRow", "settings_rows"]

SHARED_SETTINGS_MODULE: Final = "mainstay_common.settings"
_HIDDEN_VALUE: Final = "(secret)"
_PLAIN_FACTORIES: Final = (list, dict, tuple, set, frozenset)


@dataclass(frozen=True)
class SettingRow:
    """One environment variable: its name, type, default and meaning.

    ``group`` is the settings class that reads it and ``prefix`` that class's
    ``env_prefix``; ``shared`` says the class is one of the groups every service
    nests (``mainstay_common.settings``).
    """

    variable: str
    type: str
    default: str
    description: str
    group: str
    prefix: str
    shared: bool


def settings_rows(settings: type[BaseSettings]) -> list[SettingRow]:
    """Every variable ``settings`` reads, nested groups expanded where they appear."""
    return _rows(settings, prefix=_prefix(settings), seen=(settings,))


def _rows(
    settings: type[BaseSettings], *, prefix: str, seen: tuple[type[BaseSettings], ...]
) -> list[SettingRow]:
    rows: list[SettingRow] = []
    for name, field in settings.model_fields.items():
        group = _settings_group(field)
        if group is not None:
            if group in seen:
                raise CodegenError(
                    f"{settings.__qualname__}.{name}: settings groups nest in a loop"
                )
            rows.extend(_rows(group, prefix=_prefix(group), seen=(*seen, group)))
            continue
        alias = field.validation_alias if field.validation_alias is not None else field.alias
        if alias is not None and not isinstance(alias, str):
            raise CodegenError(
                f"{settings.__qualname__}.{name}: only a plain string alias can be documented"
            )
        rows.append(
            SettingRow(
                variable=(alias or f"{prefix}{name}").upper(),
                type=_type(field.annotation),
                default=_default(field),
                description=" ".join((field.description or "").split()),
                group=settings.__qualname__,
                prefix=prefix.upper(),
                shared=settings.__module__ == SHARED_SETTINGS_MODULE,
            )
        )
    return rows


def _prefix(settings: type[BaseSettings]) -> str:
    return str(settings.model_config.get("env_prefix", ""))


def _settings_group(field: FieldInfo) -> type[BaseSettings] | None:
    """The settings class of a group field that builds itself from its own prefix."""
    annotation = field.annotation
    if not (isinstance(annotation, type) and issubclass(annotation, BaseSettings)):
        return None
    factory = field.default_factory
    if isinstance(factory, type) and issubclass(factory, BaseSettings):
        return factory
    return None


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        factory: Any = field.default_factory
        if factory in _PLAIN_FACTORIES:
            return _value(factory(), secret=_is_secret(field.annotation))
        return "computed at start"
    if field.default is PydanticUndefined:
        return "required"
    return _value(field.default, secret=_is_secret(field.annotation))


def _value(value: object, *, secret: bool) -> str:
    if value is None:
        return "unset"
    if secret and value not in ([], (), {}, set(), frozenset()):
        return _HIDDEN_VALUE
    if isinstance(value, str):
        return "empty" if value == "" else f"`{value}`"
    return f"`{json.dumps(_plain(value), ensure_ascii=False)}`"


def _plain(value: object) -> object:
    """``value`` as JSON data, numbers as a person would write them (``300``, not ``300.0``)."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    elif isinstance(value, enum.Enum):
        value = _plain(value.value)
    elif isinstance(value, set | frozenset):
        value = [_plain(item) for item in sorted(value, key=repr)]
    elif isinstance(value, list | tuple):
        value = [_plain(item) for item in value]
    elif isinstance(value, dict):
        value = {str(key): _plain(item) for key, item in value.items()}
    elif isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    elif not isinstance(value, bool | int | float | str) and value is not None:
        value = str(value)
    return value


def _is_secret(annotation: object) -> bool:
    if annotation is SecretStr:
        return True
    return any(_is_secret(arg) for arg in get_args(annotation))


def _type(annotation: object) -> str:
    """A short name for the form of the value: what a platform team writes."""
    origin = get_origin(annotation)
    args = [arg for arg in get_args(annotation) if arg is not type(None)]
    if origin in (typing.Union, types.UnionType):
        name = " or ".join(_type(arg) for arg in args)
    elif origin is Literal:
        name = " \\| ".join(f"`{arg}`" for arg in get_args(annotation))
    elif origin in (list, tuple, set, frozenset):
        name = "JSON list" + (" of secrets" if args and _is_secret(args[0]) else "")
    elif origin is dict:
        name = "JSON object"
    elif annotation is SecretStr:
        name = "secret"
    elif isinstance(annotation, type):
        # bool before int: bool is an int.
        plain = (bool, "bool"), (int, "int"), (float, "float"), (str, "string")
        name = next(
            (label for kind, label in plain if issubclass(annotation, kind)),
            "JSON object" if issubclass(annotation, BaseModel) else annotation.__name__,
        )
    else:
        name = str(annotation)
    return name
