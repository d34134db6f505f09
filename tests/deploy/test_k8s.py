"""deploy/k8s: the base and each overlay render to valid Kubernetes objects that run safely."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest

from ._services import REPO, SERVICES, Service

# Strict: an unknown or misspelt field is an error, as `kubectl apply --validate=strict` makes it.
KUBERNETES_VERSION = "1.37.0"
SCALING_METRIC = "mainstay_supervisor_recommended_replicas"

Rendered = tuple[str, list[dict[str, Any]]]


def _by_kind(resources: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {r["metadata"]["name"]: r for r in resources if r["kind"] == kind}


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    container: dict[str, Any] = containers[0]
    return container


def test_the_pinned_kubernetes_version_is_bundled() -> None:
    from kubernetes_validate.utils import all_versions  # noqa: PLC0415

    assert KUBERNETES_VERSION in all_versions()


def test_every_object_matches_the_kubernetes_schema(rendered: Rendered) -> None:
    name, resources = rendered
    problems = []
    for resource in resources:
        try:
            kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            where = "/".join(map(str, error.absolute_path))
            problems.append(
                f"{resource['kind']}/{resource['metadata']['name']} {where}: {error.message}"
            )
    assert not problems, f"{name}:\n" + "\n".join(problems)


def test_every_service_has_a_deployment_service_account_service_and_autoscaler(
    rendered: Rendered,
) -> None:
    _, resources = rendered
    for kind in ("Deployment", "Service", "ServiceAccount", "HorizontalPodAutoscaler"):
        assert set(_by_kind(resources, kind)) == set(SERVICES), kind


@pytest.mark.parametrize("name", SERVICES)
def test_deployment_probes_resources_and_security(rendered: Rendered, name: str) -> None:
    _, resources = rendered
    deployment = _by_kind(resources, "Deployment")[name]
    service = Service(name)
    pod = deployment["spec"]["template"]["spec"]
    container = _container(deployment)
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports["http"] == service.http_port

    liveness, readiness = container.get("livenessProbe"), container.get("readinessProbe")
    assert liveness, f"{name}: no livenessProbe"
    assert readiness, f"{name}: no readinessProbe"
    assert liveness["httpGet"]["path"] == "/healthz"
    assert readiness["httpGet"]["path"] == "/readyz"
    for probe in (liveness, readiness):
        assert ports.get(probe["httpGet"]["port"], probe["httpGet"]["port"]) == service.http_port
    if service.grpc_port:
        assert ports["grpc"] == service.grpc_port
        grpc_probes = [
            probe["grpc"]
            for key in ("startupProbe", "livenessProbe", "readinessProbe")
            if "grpc" in (probe := container.get(key, {}))
        ]
        assert grpc_probes, "a native grpc probe asks the standard health service"
        assert all(probe["port"] == service.grpc_port for probe in grpc_probes)

    for bound in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][bound]), bound

    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert security["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["serviceAccountName"] == name
    assert pod["automountServiceAccountToken"] is False


@pytest.mark.parametrize("name", SERVICES)
def test_service_selects_the_deployments_pods_on_its_ports(rendered: Rendered, name: str) -> None:
    _, resources = rendered
    deployment = _by_kind(resources, "Deployment")[name]
    service = _by_kind(resources, "Service")[name]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = service["spec"]["selector"]
    assert selector
    assert selector.items() <= pod_labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    container_ports = {port["name"] for port in _container(deployment)["ports"]}
    targets = {port["targetPort"] for port in service["spec"]["ports"]}
    assert targets <= container_ports
    assert "http" in targets
    if Service(name).grpc_port:
        assert "grpc" in targets


@pytest.mark.parametrize("name", SERVICES)
def test_autoscaler_follows_the_supervisors_advice_for_this_service(
    rendered: Rendered, name: str
) -> None:
    _, resources = rendered
    hpa = _by_kind(resources, "HorizontalPodAutoscaler")[name]
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", name)
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "External"
    assert metric["external"]["metric"]["name"] == SCALING_METRIC
    # The supervisor labels a service by its consumer groups' prefix.
    selector = metric["external"]["metric"]["selector"]["matchLabels"]
    assert selector == {"service": Service(name).bus_name}
    assert metric["external"]["target"] == {"type": "AverageValue", "averageValue": "1"}


def test_referenced_config_maps_are_rendered_and_secrets_are_documented(
    rendered: Rendered,
) -> None:
    _, resources = rendered
    config_maps = set(_by_kind(resources, "ConfigMap"))
    readme = (REPO / "deploy" / "README.md").read_text(encoding="utf-8")
    for deployment in _by_kind(resources, "Deployment").values():
        pod = deployment["spec"]["template"]["spec"]
        container = _container(deployment)
        for source in container.get("envFrom", []):
            assert "secretRef" not in source, "take secrets by key, so the env checks see them"
            assert source["configMapRef"]["name"] in config_maps
        secret_keys = [
            entry["valueFrom"]["secretKeyRef"]["key"]
            for entry in container.get("env", [])
            if "secretKeyRef" in entry.get("valueFrom", {})
        ]
        for volume in pod.get("volumes", []):
            if "secret" in volume:
                secret_keys += [item["key"] for item in volume["secret"]["items"]]
        for key in secret_keys:
            assert f"`{key}`" in readme, f"deploy/README.md does not list the secret key {key}"
        mounts = {mount["name"] for mount in container.get("volumeMounts", [])}
        assert mounts == {volume["name"] for volume in pod.get("volumes", [])}


def test_no_kafka_or_postgres_in_the_manifests(rendered: Rendered) -> None:
    _, resources = rendered
    for resource in resources:
        if resource["kind"] in {"Deployment", "StatefulSet"}:
            images = [c["image"] for c in resource["spec"]["template"]["spec"]["containers"]]
            assert not any("kafka" in image or "postgres" in image for image in images)


def test_overlays_differ_as_documented() -> None:
    from ._kustomize import render  # noqa: PLC0415

    base = render(REPO / "deploy/k8s/base")
    dev = render(REPO / "deploy/k8s/overlays/dev")
    production = render(REPO / "deploy/k8s/overlays/production")
    assert {r["metadata"].get("namespace") for r in base} == {None}
    assert {r["metadata"]["namespace"] for r in dev} == {"mainstay-dev"}
    assert {r["metadata"]["namespace"] for r in production} == {"mainstay"}
    for name in SERVICES:
        assert _container(_by_kind(dev, "Deployment")[name])["image"] == f"mainstay/{name}:dev"
        deployment = _by_kind(production, "Deployment")[name]
        assert _container(deployment)["image"] == f"registry.example.com/mainstay/{name}:0.1.0"
        assert deployment["spec"]["replicas"] == 2
        assert _by_kind(production, "HorizontalPodAutoscaler")[name]["spec"]["minReplicas"] == 2
        assert _by_kind(dev, "HorizontalPodAutoscaler")[name]["spec"]["maxReplicas"] == 2
        labels = _by_kind(production, "Deployment")[name]["spec"]["template"]["metadata"]["labels"]
        assert labels["app.kubernetes.io/part-of"] == "mainstay"
    memory = _container(_by_kind(production, "Deployment")["memory"])
    assert memory["resources"]["limits"]["memory"] == "2Gi"
    assert memory["livenessProbe"]["httpGet"]["path"] == "/healthz", "a patch keeps the rest"
    assert set(_by_kind(production, "PodDisruptionBudget")) == set(SERVICES)
    dev_mesh = _by_kind(dev, "ConfigMap")["mainstay-mesh"]["data"]
    assert dev_mesh["MAINSTAY_KAFKA_REPLICATION_FACTOR"] == "1"
    assert "MAINSTAY_AUTH_JWKS_URL" in dev_mesh, "a patch merges into the base's data"
