"""services/<svc>/Dockerfile: multi-stage uv build, non-root, health-checked, runnable module."""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
from dataclasses import dataclass, field

import pytest

from ._services import REPO, SERVICES, Service, accepted_env

# Set in every image for the interpreter, not read by a settings class.
_INTERPRETER_ENV = {"PATH", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE"}


@dataclass
class Stage:
    image: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [argument for instruction, argument in self.instructions if instruction == keyword]


def _instructions(text: str) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` with continuation lines joined and comments dropped."""
    logical: list[str] = []
    current = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or (stripped.startswith("#") and not current):
            continue
        if stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        logical.append(current + stripped)
        current = ""
    assert not current, "the Dockerfile ends inside a continued line"
    parsed = []
    for line in logical:
        instruction, _, argument = line.partition(" ")
        parsed.append((instruction.upper(), argument.strip()))
    return parsed


def _stages(name: str) -> tuple[dict[str, str], list[Stage]]:
    text = (REPO / "services" / name / "Dockerfile").read_text(encoding="utf-8")
    arguments: dict[str, str] = {}
    stages: list[Stage] = []
    for instruction, argument in _instructions(text):
        if instruction == "ARG" and not stages:
            key, _, value = argument.partition("=")
            arguments[key] = value
        elif instruction == "FROM":
            words = argument.split()
            image = re.sub(r"\$\{(\w+)\}", lambda m: arguments[m.group(1)], words[0])
            alias = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(image=image, name=alias))
        else:
            assert stages, f"{instruction} before the first FROM"
            stages[-1].instructions.append((instruction, argument))
    return arguments, stages


def _env(stage: Stage) -> dict[str, str]:
    values: dict[str, str] = {}
    for argument in stage.all("ENV"):
        for word in shlex.split(argument):
            key, _, value = word.partition("=")
            values[key] = value
    return values


@pytest.mark.parametrize("name", SERVICES)
def test_builds_with_uv_in_one_stage_and_runs_on_slim_python_in_another(name: str) -> None:
    _, stages = _stages(name)
    assert len(stages) >= 2, "multi-stage: a builder and the final image"
    builder, final = stages[0], stages[-1]
    assert builder.name == "builder"
    uv_sources = [
        argument
        for argument in builder.all("COPY") + builder.all("RUN")
        if "ghcr.io/astral-sh/uv:" in argument or re.search(r"pip install .*uv==", argument)
    ]
    assert uv_sources, "the builder takes uv from its official image or a pinned pip install"
    assert not any(":latest" in source for source in uv_sources), "uv is pinned"
    sync = " ".join(argument for argument in builder.all("RUN") if "uv sync" in argument)
    for flag in ("--frozen", "--no-dev", f"--package mainstay-{name}"):
        assert flag in sync, f"uv sync {flag}"
    assert "UV_PROJECT_ENVIRONMENT" in _env(builder)
    assert _env(builder)["UV_PROJECT_ENVIRONMENT"] == "/app/.venv"
    assert final.image == "python:3.11-slim"
    assert any(
        argument.startswith("--from=builder") and "/app/.venv" in argument
        for argument in final.all("COPY")
    ), "the final stage copies the builder's venv"


@pytest.mark.parametrize("name", SERVICES)
def test_runs_as_a_numeric_non_root_user(name: str) -> None:
    _, stages = _stages(name)
    users = stages[-1].all("USER")
    assert users, "the final stage sets USER"
    user = users[-1].split(":")[0]
    assert user.isdigit(), f"USER {users[-1]}: numeric, so runAsNonRoot can verify it"
    assert int(user) != 0


@pytest.mark.parametrize("name", SERVICES)
def test_health_check_asks_healthz_on_the_services_http_port(name: str) -> None:
    _, stages = _stages(name)
    service = Service(name)
    checks = stages[-1].all("HEALTHCHECK")
    assert len(checks) == 1
    _, _, command = checks[0].partition("CMD ")
    argv = json.loads(command)
    assert argv[:2] == ["python", "-c"], "slim has no curl: the interpreter asks"
    code = argv[2]
    assert "/healthz" in code
    prefix = name.replace("-", "_").upper()
    assert f"'{prefix}_HTTP_PORT', '{service.http_port}'" in code
    assert f"{prefix}_HTTP_PORT" in accepted_env(service.settings_class)
    compile(code, "HEALTHCHECK", "exec")


@pytest.mark.parametrize("name", SERVICES)
def test_exposes_the_services_ports_and_listens_on_every_interface(name: str) -> None:
    _, stages = _stages(name)
    service = Service(name)
    exposed = {
        int(port.split("/")[0])
        for argument in stages[-1].all("EXPOSE")
        for port in argument.split()
    }
    wanted = {service.http_port} | ({service.grpc_port} if service.grpc_port else set())
    assert exposed == wanted
    env = _env(stages[-1])
    accepted = accepted_env(service.settings_class)
    unknown = set(env) - _INTERPRETER_ENV - set(accepted)
    assert not unknown, f"ENV that {name} does not read: {sorted(unknown)}"
    prefix = name.replace("-", "_").upper()
    assert env[f"{prefix}_HTTP_HOST"] == "0.0.0.0"
    if service.grpc_port:
        assert env[f"{prefix}_GRPC_HOST"] == "0.0.0.0"


@pytest.mark.parametrize("name", SERVICES)
def test_entrypoint_runs_the_services_main_module(name: str) -> None:
    _, stages = _stages(name)
    entrypoints = stages[-1].all("ENTRYPOINT")
    assert len(entrypoints) == 1
    argv = json.loads(entrypoints[0])
    assert argv[:2] == ["python", "-m"], "exec form: python -m <module>"
    assert len(argv) == 3
    module = argv[2]
    assert module == Service(name).module
    assert importlib.util.find_spec(module) is not None, f"{module} is not importable"
    assert importlib.util.find_spec(f"{module}.__main__") is not None, f"{module} has no __main__"


def test_build_context_keeps_what_the_build_needs() -> None:
    ignored = {
        line.strip()
        for line in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    for needed in ("pyproject.toml", "uv.lock", "README.md", "libs", "services"):
        assert needed not in ignored
    for heavy in (".venv", ".mainstay", ".tools", ".git", "**/node_modules"):
        assert heavy in ignored
