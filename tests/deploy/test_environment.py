"""The environment compose and Kubernetes give each service: complete, and read by that service.

Complete: every variable its settings class requires and every variable of the
mesh wiring the local stack gives it (devstack ``service_environment``) is set.
Read: every variable set is one its settings class reads (a misspelt name is
otherwise silently ignored), and the service's settings load from it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from ._kustomize import render
from ._services import (
    FILE_ALTERNATIVES,
    REPO,
    SERVICES,
    Service,
    accepted_env,
    required_env,
    value_at,
)

if TYPE_CHECKING:
    from pathlib import Path

KUSTOMIZATIONS = ("base", "overlays/dev", "overlays/production")


def _compose_env(compose: dict[str, Any], name: str) -> dict[str, str | None]:
    environment = compose["services"][name].get("environment", {})
    if isinstance(environment, list):
        environment = dict(entry.partition("=")[::2] for entry in environment)
    return {key: None if value is None else str(value) for key, value in environment.items()}


def _k8s_env(resources: list[dict[str, Any]], name: str) -> dict[str, str | None]:
    """The container's environment; ``None`` for a value only the cluster knows (a Secret)."""
    deployment = next(
        r for r in resources if r["kind"] == "Deployment" and r["metadata"]["name"] == name
    )
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    config_maps = {r["metadata"]["name"]: r for r in resources if r["kind"] == "ConfigMap"}
    environment: dict[str, str | None] = {}
    for source in container.get("envFrom", []):
        environment.update(config_maps[source["configMapRef"]["name"]]["data"])
    for entry in container.get("env", []):
        environment[entry["name"]] = entry.get("value")
    return environment


def _environments(compose: dict[str, Any]) -> list[tuple[str, str, dict[str, str | None]]]:
    found = [(f"compose:{name}", name, _compose_env(compose, name)) for name in SERVICES]
    for kustomization in KUSTOMIZATIONS:
        resources = render(REPO / "deploy" / "k8s" / kustomization)
        found += [
            (f"k8s {kustomization}:{name}", name, _k8s_env(resources, name)) for name in SERVICES
        ]
    return found


def _missing(wanted: dict[str, str], given: dict[str, str | None]) -> list[str]:
    return [
        f"{variable} ({why})"
        for variable, why in sorted(wanted.items())
        if variable not in given and FILE_ALTERNATIVES.get(variable) not in given
    ]


def test_every_required_and_wired_variable_is_set(compose: dict[str, Any], tmp_path: Path) -> None:
    problems = []
    for where, name, environment in _environments(compose):
        wanted = required_env(Service(name), tmp_path / where.replace(":", "_").replace(" ", "_"))
        problems += [f"{where}: missing {entry}" for entry in _missing(wanted, environment)]
    assert not problems, "\n".join(problems)


def test_every_variable_set_is_read_by_the_service(compose: dict[str, Any]) -> None:
    problems = []
    for where, name, environment in _environments(compose):
        accepted = accepted_env(Service(name).settings_class)
        problems += [
            f"{where}: {variable} is read by nothing"
            for variable in sorted(set(environment) - set(accepted))
        ]
    assert not problems, "\n".join(problems)


def test_the_secret_alternatives_are_real_settings() -> None:
    for name in SERVICES:
        accepted = accepted_env(Service(name).settings_class)
        for file_variable, inline_variable in FILE_ALTERNATIVES.items():
            assert (file_variable in accepted) == (inline_variable in accepted), file_variable


def _matches(value: Any, given: str) -> bool:
    if isinstance(value, bool):
        return value is (given.lower() in {"1", "true", "yes", "on"})
    if isinstance(value, int | float):
        return float(value) == float(given)
    return str(value) == given


@pytest.mark.parametrize("name", SERVICES)
def test_the_settings_load_from_each_environment_and_take_every_value(
    compose: dict[str, Any], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = Service(name)
    accepted = accepted_env(service.settings_class)
    for where, other, environment in _environments(compose):
        if other != name:
            continue
        with monkeypatch.context() as scope:
            for variable in accepted:
                scope.delenv(variable, raising=False)
            literal = {key: value for key, value in environment.items() if value is not None}
            for key, value in literal.items():
                scope.setenv(key, value)
            settings = service.settings_class()  # a bad value fails here, as at start
            for key, value in literal.items():
                assert _matches(value_at(settings, accepted[key]), value), f"{where}: {key}"
