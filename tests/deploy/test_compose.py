"""docker-compose.yml: valid Compose, every service built from its Dockerfile and wired in order."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import jsonschema
import pytest

from ._services import REPO, SERVICES, Service


def _compose_schema() -> dict[str, Any]:
    vendored = resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    schema: dict[str, Any] = json.loads(vendored.read_text(encoding="utf-8"))
    return schema


def test_compose_file_follows_the_compose_specification(compose: dict[str, Any]) -> None:
    schema = _compose_schema()
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    errors = sorted(
        validator_class(schema).iter_errors(compose), key=lambda error: list(error.absolute_path)
    )
    assert not errors, "\n".join(
        f"{'/'.join(map(str, error.absolute_path)) or '<root>'}: {error.message}"
        for error in errors
    )


@pytest.mark.parametrize("name", SERVICES)
def test_each_service_is_built_from_its_dockerfile(compose: dict[str, Any], name: str) -> None:
    service = compose["services"][name]
    build = service["build"]
    assert build["context"] == "."
    assert build["dockerfile"] == f"services/{name}/Dockerfile"
    assert (REPO / build["dockerfile"]).is_file()
    assert service["image"].split(":")[0] == f"mainstay/{name}"


@pytest.mark.parametrize("name", SERVICES)
def test_each_service_publishes_its_ports_and_has_a_readiness_healthcheck(
    compose: dict[str, Any], name: str
) -> None:
    service, settings = compose["services"][name], Service(name)
    published = {str(entry) for entry in service.get("ports", [])}
    wanted = {settings.http_port} | ({settings.grpc_port} if settings.grpc_port else set())
    assert {f"{port}:{port}" for port in wanted} <= published
    test = " ".join(service["healthcheck"]["test"])
    assert f"127.0.0.1:{settings.http_port}/readyz" in test


def test_dependencies_name_existing_services_with_a_condition_they_can_meet(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    for name, service in services.items():
        depends_on = service.get("depends_on", {})
        if isinstance(depends_on, list):
            depends_on = {other: {"condition": "service_started"} for other in depends_on}
        for other, rule in depends_on.items():
            assert other in services, f"{name} depends on unknown service {other}"
            condition = rule.get("condition", "service_started")
            if condition == "service_healthy":
                assert "healthcheck" in services[other], f"{name} waits for {other}'s health"
            if condition == "service_completed_successfully":
                assert services[other].get("restart") == "no", f"{other} must be a one-shot"


@pytest.mark.parametrize("name", SERVICES)
def test_each_service_starts_after_the_broker_postgres_and_the_topics(
    compose: dict[str, Any], name: str
) -> None:
    depends_on = compose["services"][name]["depends_on"]
    assert depends_on["kafka"]["condition"] == "service_healthy"
    assert depends_on["postgres"]["condition"] == "service_healthy"
    assert depends_on["kafka-topics"]["condition"] == "service_completed_successfully"
    if name != "identity":  # the others verify tokens against identity's JWKS
        assert depends_on["identity"]["condition"] == "service_healthy"


def test_bind_mounted_files_exist(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = str(volume).split(":", 1)[0]
            if source.startswith("./"):
                assert (REPO / source).exists(), f"{name} mounts missing {source}"


def test_topic_creation_reads_the_generated_topics_file(compose: dict[str, Any]) -> None:
    job = compose["services"]["kafka-topics"]
    mounts = dict(str(volume).rsplit(":", 1)[0].split(":", 1) for volume in job["volumes"])
    assert mounts["./deploy/kafka/topics.yaml"] == "/opt/mainstay/topics.yaml"
    assert "--file=/opt/mainstay/topics.yaml" in job["command"]
    assert "--replication-factor=1" in job["command"]
    script = job["entrypoint"][-1].replace("/opt/mainstay/deploy/", "deploy/docker/")
    assert (REPO / script).is_file()


def test_the_collector_exports_traces_to_jaeger(compose: dict[str, Any]) -> None:
    import yaml  # noqa: PLC0415

    services = compose["services"]
    assert "jaeger" in services
    config = yaml.safe_load((REPO / "deploy/docker/otel-collector.yaml").read_text("utf-8"))
    traces = config["service"]["pipelines"]["traces"]
    assert "otlp" in traces["receivers"]
    assert any(
        config["exporters"][name]["endpoint"].startswith("jaeger:") for name in traces["exporters"]
    )


def test_the_credentials_job_runs_with_identitys_own_environment(compose: dict[str, Any]) -> None:
    # It signs the admin token from identity's database with identity's key secret.
    services = compose["services"]
    assert services["mesh-credentials"]["environment"] == services["identity"]["environment"]
    assert services["mesh-credentials"]["image"] == services["identity"]["image"]
