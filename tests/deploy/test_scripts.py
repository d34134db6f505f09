"""The helper scripts docker-compose.yml runs: topic creation and the mesh's secrets."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import sys
from typing import TYPE_CHECKING, Any

import yaml
from cryptography.fernet import Fernet

from ._services import REPO

if TYPE_CHECKING:
    from pathlib import Path
    from types import ModuleType


def _script(name: str) -> ModuleType:
    path = REPO / "deploy" / "docker" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"deploy_docker_{name}", path)
    assert spec is not None
    assert spec.loader is not None
    module = sys.modules.get(spec.name)
    if module is None:
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
    return module


def _topics() -> dict[str, Any]:
    document = yaml.safe_load((REPO / "deploy/kafka/topics.yaml").read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


def test_every_topic_of_topics_yaml_is_created_as_declared() -> None:
    create_topics = _script("create_topics")
    document = _topics()
    planned = {topic.name: topic for topic in create_topics.plan(document)}
    assert list(planned) == [entry["name"] for entry in document["topics"]]
    for entry in document["topics"]:
        topic = planned[entry["name"]]
        assert topic.partitions == entry["partitions"]
        assert topic.replication_factor == entry["replication_factor"]
        assert topic.configs == {key: str(value) for key, value in entry["configs"].items()}


def test_a_single_broker_gets_one_replica_and_one_in_sync_replica() -> None:
    create_topics = _script("create_topics")
    document = _topics()
    planned = create_topics.plan(document, replication_factor=1)
    assert len(planned) == len(document["topics"]) > 0
    for topic, entry in zip(planned, document["topics"], strict=True):
        assert topic.replication_factor == 1
        assert topic.partitions == entry["partitions"]
        if "min.insync.replicas" in entry["configs"]:
            assert topic.configs["min.insync.replicas"] == "1"
        others = {k: str(v) for k, v in entry["configs"].items() if k != "min.insync.replicas"}
        assert others.items() <= topic.configs.items()


def test_keys_are_fernet_keys_and_are_kept(tmp_path: Path) -> None:
    mesh_init = _script("mesh_init")
    assert mesh_init.main(["keys", str(tmp_path)]) == 0
    keys = {
        name: (tmp_path / name).read_text(encoding="utf-8")
        for name in ("identity.key", "vault.key")
    }
    for key in keys.values():
        Fernet(key.strip().encode())
    assert keys["identity.key"] != keys["vault.key"]
    assert (tmp_path / "vault.key").stat().st_mode & 0o077 == 0
    assert mesh_init.main(["keys", str(tmp_path)]) == 0
    assert {name: (tmp_path / name).read_text(encoding="utf-8") for name in keys} == keys


def _requirements(distribution: str) -> set[str]:
    names = set()
    for requirement in importlib.metadata.requires(distribution) or []:
        if "extra ==" not in requirement:
            names.add(re.split(r"[\s<>=!~;\[(]", requirement, maxsplit=1)[0].lower())
    return names


def test_the_images_that_run_the_scripts_have_what_they_import() -> None:
    # kafka-topics runs create_topics.py in the supervisor image, the mesh-* jobs run
    # mesh_init.py in the identity image (docker-compose.yml).
    common = _requirements("mainstay-common")
    assert "aiokafka" in common | _requirements("mainstay-supervisor")
    assert "pyyaml" in _requirements("mainstay-supervisor")
    assert "httpx" in common | _requirements("mainstay-identity")
