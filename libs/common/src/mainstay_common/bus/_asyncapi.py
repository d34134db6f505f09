"""An AsyncAPI 3.0 document of what a service's bus consumes and publishes.

It is built from the bus itself (every registered consumer group, with its retry
tiers and dead-letter topic) and from the topic registry (payload models), so
the committed ``schemas/asyncapi/<svc>.yaml`` cannot drift from the code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mainstay_contracts import CE_SPECVERSION_VALUE, CONTENT_TYPE_JSON, Header

if TYPE_CHECKING:
    from collections.abc import Sequence

    from mainstay_common.bus._bus import Bus
    from mainstay_contracts import TopicSpec

__all__ = ["asyncapi_document"]

_REF = "#/components/schemas/{model}"


def _envelope_headers() -> dict[str, Any]:
    text = {"type": "string"}
    return {
        "type": "object",
        "description": "CloudEvents Kafka binary-mode headers of every Mainstay message.",
        "required": [
            Header.SPECVERSION,
            Header.ID,
            Header.TYPE,
            Header.SOURCE,
            Header.CONTENT_TYPE,
        ],
        "properties": {
            Header.SPECVERSION: {"const": CE_SPECVERSION_VALUE},
            Header.ID: {**text, "description": "Unique message id; the idempotency key."},
            Header.TYPE: text,
            Header.SOURCE: text,
            Header.TIME: {**text, "format": "date-time"},
            Header.SUBJECT: text,
            Header.TENANT: text,
            Header.CORRELATION_ID: {**text, "description": "The task or flow id."},
            Header.CAUSATION_ID: {
                **text,
                "description": "The ce_id of the message that caused this one.",
            },
            Header.CONTENT_TYPE: {"const": CONTENT_TYPE_JSON},
            Header.TRACEPARENT: text,
            Header.TRACESTATE: text,
        },
    }


def _add_schema(schemas: dict[str, Any], spec: TopicSpec[Any]) -> str:
    schema = spec.payload.model_json_schema(ref_template=_REF)
    schemas.update(schema.pop("$defs", {}))
    name = spec.payload.__name__
    schemas[name] = schema
    return name


def _channel(spec: TopicSpec[Any], address: str, message: str) -> dict[str, Any]:
    return {
        "address": address,
        "description": spec.description,
        "messages": {message: {"$ref": f"#/components/messages/{message}"}},
        "x-mainstay-topic": {
            "owner": spec.owner,
            "kind": spec.kind,
            "key": spec.key_field,
            "partitions": spec.partitions,
        },
    }


def asyncapi_document(
    bus: Bus,
    *,
    title: str,
    version: str,
    description: str,
    publishes: Sequence[TopicSpec[Any]] = (),
) -> dict[str, Any]:
    schemas: dict[str, Any] = {"CloudEventHeaders": _envelope_headers()}
    messages: dict[str, Any] = {}
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}

    def declare(spec: TopicSpec[Any]) -> str:
        name = _add_schema(schemas, spec)
        messages[name] = {
            "name": name,
            "title": spec.payload.__name__,
            "contentType": CONTENT_TYPE_JSON,
            "headers": {"$ref": "#/components/schemas/CloudEventHeaders"},
            "payload": {"$ref": _REF.format(model=name)},
        }
        channels.setdefault(spec.name, _channel(spec, spec.name, name))
        return name

    for consumer in bus.consumers:
        declare(consumer.spec)
        operations[f"receive {consumer.group}"] = {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{consumer.spec.name}"},
            "summary": f"Consumer group {consumer.group}",
            "x-consumer-group": consumer.group,
            "x-retry": "blocking" if consumer.policy.blocking else "tiers",
            "x-retry-topics": list(consumer.retry_topics),
            "x-dead-letter-topic": consumer.dlq_topic,
            "x-transactional-inbox": consumer.database is not None,
        }
    for spec in publishes:
        declare(spec)
        operations[f"send {spec.name}"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{spec.name}"},
            "summary": spec.description,
        }
    return {
        "asyncapi": "3.0.0",
        "info": {"title": title, "version": version, "description": description},
        "defaultContentType": CONTENT_TYPE_JSON,
        "servers": {
            "kafka": {
                "host": "127.0.0.1:19092",
                "protocol": "kafka",
                "description": "The embedded development broker; set MAINSTAY_KAFKA_BOOTSTRAP for yours.",
            }
        },
        "channels": dict(sorted(channels.items())),
        "operations": dict(sorted(operations.items())),
        "components": {
            "messages": dict(sorted(messages.items())),
            "schemas": dict(sorted(schemas.items())),
        },
    }
