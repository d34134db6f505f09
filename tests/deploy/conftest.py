"""Offline checks of the deployment files: docker-compose.yml, the Dockerfiles and deploy/k8s.

Nothing here needs a Docker engine, a cluster, a broker or the network: the
files are parsed and checked against the schemas the dev dependencies ship
(the Compose Specification in check-jsonschema, Kubernetes' in
kubernetes-validate) and against the services' own settings classes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
import yaml

from ._kustomize import render
from ._services import REPO

if TYPE_CHECKING:
    from pathlib import Path

K8S = REPO / "deploy" / "k8s"
KUSTOMIZATIONS = {
    "base": K8S / "base",
    "dev": K8S / "overlays" / "dev",
    "production": K8S / "overlays" / "production",
}


@pytest.fixture(scope="session")
def compose() -> dict[str, Any]:
    document = yaml.safe_load((REPO / "docker-compose.yml").read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


@pytest.fixture(scope="session", params=sorted(KUSTOMIZATIONS))
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    """``(name, resources)`` of the base and of each overlay."""
    name = str(request.param)
    folder: Path = KUSTOMIZATIONS[name]
    return name, render(folder)
