"""A renderer for exactly the kustomize features deploy/k8s uses, so the tests need no binary.

No kustomize (or kubectl) build comes from PyPI or npm without downloading a
binary at install time, so the tests render the manifests themselves. Supported:

- ``resources``: files (one or more YAML documents) and directories holding a
  ``kustomization.yaml``, rendered recursively;
- ``namespace``: set on every namespaced resource;
- ``images``: ``name`` matched against container images without their tag or
  digest, replaced by ``newName`` and/or ``newTag``;
- ``replicas``: ``count`` of the Deployment named ``name``;
- ``labels``: ``pairs`` added to ``metadata.labels`` and, with
  ``includeTemplates``, to pod templates (``includeSelectors`` must be false);
- ``patches``: strategic-merge patches from ``path`` or inline ``patch``,
  applied to the resource of the patch's kind and name, or with ``target`` to
  every resource of ``target.kind`` (and ``target.name``, a regex, if given).
  Lists of maps that carry ``name`` (containers, env, volumes, ports...) merge
  by name; other lists are replaced, as in kustomize for these fields.

Anything else (another field, a JSON 6902 patch, a ``$patch`` directive, a
label in selectors) raises :class:`UnsupportedKustomization`, so a manifest
change that this renderer would get wrong fails the tests instead of passing
them. ``kubectl kustomize`` renders the same files on a machine that has it.
"""

from __future__ import annotations

import copy
import re
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["UnsupportedKustomization", "render", "strategic_merge"]

Resource = dict[str, Any]

_KNOWN_FIELDS = frozenset(
    {"apiVersion", "kind", "resources", "namespace", "images", "replicas", "labels", "patches"}
)
_CLUSTER_SCOPED = frozenset(
    {
        "Namespace",
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "PersistentVolume",
        "StorageClass",
        "PriorityClass",
    }
)
_POD_TEMPLATE_KINDS = frozenset({"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"})


class UnsupportedKustomization(ValueError):
    """A kustomization uses something this renderer does not implement."""


def _load_documents(path: Path) -> list[Resource]:
    documents = [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]
    for document in documents:
        if not isinstance(document, dict) or "kind" not in document:
            raise UnsupportedKustomization(f"{path}: not a Kubernetes resource: {document!r}")
    return documents


def _merge_list(base: list[Any], patch: list[Any]) -> list[Any]:
    keyed = all(isinstance(item, dict) and "name" in item for item in base + patch)
    if not keyed or not patch:
        return copy.deepcopy(patch)
    merged = [copy.deepcopy(item) for item in base]
    index = {item["name"]: position for position, item in enumerate(merged)}
    for item in patch:
        if item["name"] in index:
            position = index[item["name"]]
            merged[position] = strategic_merge(merged[position], item)
        else:
            merged.append(copy.deepcopy(item))
    return merged


def strategic_merge(base: Any, patch: Any) -> Any:
    """``patch`` merged into ``base`` (neither is changed)."""
    if isinstance(patch, dict) and isinstance(base, dict):
        if any(key.startswith("$") for key in patch):
            raise UnsupportedKustomization(f"patch directives are not supported: {patch!r}")
        merged = copy.deepcopy(base)
        for key, value in patch.items():
            if value is None:
                merged.pop(key, None)
            elif key in merged:
                merged[key] = strategic_merge(merged[key], value)
            else:
                merged[key] = copy.deepcopy(value)
        return merged
    if isinstance(patch, list) and isinstance(base, list):
        return _merge_list(base, patch)
    return copy.deepcopy(patch)


def _containers(resource: Resource) -> list[dict[str, Any]]:
    spec = resource.get("spec", {}).get("template", {}).get("spec", {})
    return list(spec.get("containers", [])) + list(spec.get("initContainers", []))


def _split_image(image: str) -> tuple[str, str]:
    """``(name, suffix)``: the suffix is ``:tag``, ``@digest`` or empty."""
    if "@" in image:
        name, digest = image.split("@", 1)
        return name, "@" + digest
    last = image.rsplit("/", 1)[-1]
    if ":" in last:
        name, tag = image.rsplit(":", 1)
        return name, ":" + tag
    return image, ""


def _apply_images(resources: list[Resource], images: list[dict[str, Any]]) -> None:
    for rule in images:
        unknown = set(rule) - {"name", "newName", "newTag"}
        if unknown:
            raise UnsupportedKustomization(f"images: unsupported fields {sorted(unknown)}")
        for resource in resources:
            for container in _containers(resource):
                name, suffix = _split_image(container["image"])
                if name != rule["name"]:
                    continue
                new_name = rule.get("newName", name)
                new_suffix = f":{rule['newTag']}" if "newTag" in rule else suffix
                container["image"] = f"{new_name}{new_suffix}"


def _apply_replicas(resources: list[Resource], replicas: list[dict[str, Any]]) -> None:
    for rule in replicas:
        matched = [
            resource
            for resource in resources
            if resource["kind"] in {"Deployment", "StatefulSet"}
            and resource["metadata"]["name"] == rule["name"]
        ]
        if not matched:
            raise UnsupportedKustomization(f"replicas: nothing named {rule['name']!r}")
        for resource in matched:
            resource["spec"]["replicas"] = int(rule["count"])


def _apply_labels(resources: list[Resource], labels: list[dict[str, Any]]) -> None:
    for rule in labels:
        unknown = set(rule) - {"pairs", "includeSelectors", "includeTemplates"}
        if unknown or rule.get("includeSelectors", False):
            raise UnsupportedKustomization(f"labels: unsupported rule {rule!r}")
        pairs = {str(key): str(value) for key, value in rule["pairs"].items()}
        for resource in resources:
            resource.setdefault("metadata", {}).setdefault("labels", {}).update(pairs)
            if rule.get("includeTemplates", False) and resource["kind"] in _POD_TEMPLATE_KINDS:
                template = resource["spec"]["template"].setdefault("metadata", {})
                template.setdefault("labels", {}).update(pairs)


def _patch_targets(
    resources: list[Resource], patch: Resource, target: dict[str, Any] | None
) -> list[int]:
    if target is None:
        kind, name = patch["kind"], patch["metadata"]["name"]
        return [
            position
            for position, resource in enumerate(resources)
            if resource["kind"] == kind and resource["metadata"]["name"] == name
        ]
    unknown = set(target) - {"kind", "name"}
    if unknown:
        raise UnsupportedKustomization(f"patch target: unsupported fields {sorted(unknown)}")
    return [
        position
        for position, resource in enumerate(resources)
        if resource["kind"] == target["kind"]
        and ("name" not in target or re.fullmatch(target["name"], resource["metadata"]["name"]))
    ]


def _apply_patches(resources: list[Resource], patches: list[dict[str, Any]], folder: Path) -> None:
    for entry in patches:
        unknown = set(entry) - {"path", "patch", "target"}
        if unknown:
            raise UnsupportedKustomization(f"patches: unsupported fields {sorted(unknown)}")
        if "path" in entry:
            documents = _load_documents(folder / entry["path"])
        else:
            documents = [yaml.safe_load(entry["patch"])]
        if len(documents) != 1 or not isinstance(documents[0], dict):
            raise UnsupportedKustomization(f"patches: one strategic-merge patch per entry: {entry}")
        patch = documents[0]
        targets = _patch_targets(resources, patch, entry.get("target"))
        if not targets:
            raise UnsupportedKustomization(f"patch {entry} matches no resource")
        body = {key: value for key, value in patch.items() if key not in {"apiVersion", "kind"}}
        for position in targets:
            resource = resources[position]
            named = copy.deepcopy(body)
            # With a target the patch's own name does not matter (as in kustomize).
            named.setdefault("metadata", {})["name"] = resource["metadata"]["name"]
            resources[position] = strategic_merge(resource, named)


def render(folder: Path) -> list[Resource]:
    """The resources of the kustomization in ``folder``, transformed as kustomize would."""
    kustomization_file = folder / "kustomization.yaml"
    kustomization = yaml.safe_load(kustomization_file.read_text(encoding="utf-8"))
    unknown = set(kustomization) - _KNOWN_FIELDS
    if unknown:
        raise UnsupportedKustomization(
            f"{kustomization_file}: unsupported fields {sorted(unknown)}"
        )
    resources: list[Resource] = []
    for entry in kustomization.get("resources", []):
        path = (folder / entry).resolve()
        if path.is_dir():
            resources += render(path)
        elif path.is_file():
            resources += _load_documents(path)
        else:
            raise FileNotFoundError(f"{kustomization_file}: resource {entry} does not exist")
    _apply_patches(resources, kustomization.get("patches", []), folder)
    if "namespace" in kustomization:
        for resource in resources:
            if resource["kind"] not in _CLUSTER_SCOPED:
                resource["metadata"]["namespace"] = kustomization["namespace"]
    _apply_images(resources, kustomization.get("images", []))
    _apply_replicas(resources, kustomization.get("replicas", []))
    _apply_labels(resources, kustomization.get("labels", []))
    seen: set[tuple[str, str, str]] = set()
    for resource in resources:
        key = (
            resource["kind"],
            resource["metadata"].get("namespace", ""),
            resource["metadata"]["name"],
        )
        if key in seen:
            raise UnsupportedKustomization(f"{kustomization_file}: {key} is declared twice")
        seen.add(key)
    return resources
