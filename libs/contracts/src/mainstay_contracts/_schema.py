"""JSON Schema export of the registered topics.

``schemas/events/<topic>.json`` is the payload model's JSON Schema (validation
mode: what a consumer accepts) with a header that ties it to its topic. The
rendering is canonical (sorted keys, two-space indent, trailing newline) so the
committed copy only changes when the contract does, and the compatibility
check in :mod:`mainstay_contracts._compat` reads it back.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from mainstay_contracts._registry import TopicRegistry, TopicSpec

__all__ = [
    "JSON_SCHEMA_DIALECT",
    "TOPIC_METADATA_KEY",
    "event_schema",
    "event_schema_filename",
    "event_schemas",
    "render_event_schema",
]

JSON_SCHEMA_DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"
TOPIC_METADATA_KEY: Final = "x-mainstay-topic"
"""The header key that carries the topic's registry entry inside its schema."""


def event_schema_filename(topic: str) -> str:
    return f"{topic}.json"


def topic_metadata(spec: TopicSpec[Any]) -> dict[str, Any]:
    """The registry entry of ``spec`` as plain JSON data."""
    payload = spec.payload
    return {
        "name": spec.name,
        "owner": spec.owner,
        "kind": spec.kind,
        "major_version": spec.major_version,
        "key_field": spec.key_field,
        "payload": f"{payload.__module__}.{payload.__qualname__}",
        "partitions": spec.partitions,
        "cleanup_policy": "compact" if spec.compacted else "delete",
        "compacted": spec.compacted,
        "retention_ms": spec.retention_ms,
        "description": spec.description,
        "event_types": list(spec.event_types or (spec.default_event_type,)),
    }


def event_schema(spec: TopicSpec[Any]) -> dict[str, Any]:
    """The JSON Schema of ``spec``'s payload, headed by its topic metadata."""
    schema: dict[str, Any] = spec.payload.model_json_schema(mode="validation")
    schema["$schema"] = JSON_SCHEMA_DIALECT
    schema["$id"] = f"urn:mainstay:events:{spec.name}"
    # The title names the topic rather than the Python class, so renaming a model
    # does not churn the committed schema; the class lives in the metadata.
    schema["title"] = spec.name
    schema[TOPIC_METADATA_KEY] = topic_metadata(spec)
    return schema


def render_event_schema(schema: dict[str, Any]) -> str:
    """Canonical text of a schema: sorted keys, two-space indent, final newline."""
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n"


def event_schemas(registry: TopicRegistry) -> dict[str, dict[str, Any]]:
    """The schema of every topic in ``registry``, by topic name."""
    return {spec.name: event_schema(spec) for spec in registry}
