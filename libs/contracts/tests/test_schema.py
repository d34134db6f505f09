"""Event schema export: the payload's JSON Schema with its topic's registry entry."""

from __future__ import annotations

import json

from pydantic import BaseModel, Field

from mainstay_contracts import (
    TopicRegistry,
    TopicSpec,
    event_schema,
    event_schemas,
    render_event_schema,
)
from mainstay_contracts.supervisor import PROBE


class Account(BaseModel):
    """A ledger account."""

    account_id: str
    balance: int = Field(default=0, ge=0)


ACCOUNTS = TopicSpec(
    name="ledger.evt.account.v2",
    owner="ledger",
    kind="evt",
    key_field="account_id",
    payload=Account,
    partitions=12,
    compacted=True,
    retention_ms=None,
    description="Latest state of every account.",
)


def test_schema_carries_the_topic_header() -> None:
    schema = event_schema(ACCOUNTS)
    assert schema["$id"] == "urn:mainstay:events:ledger.evt.account.v2"
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["title"] == "ledger.evt.account.v2"
    assert schema["description"] == "A ledger account."
    assert schema["required"] == ["account_id"]
    assert schema["x-mainstay-topic"] == {
        "name": "ledger.evt.account.v2",
        "owner": "ledger",
        "kind": "evt",
        "major_version": 2,
        "key_field": "account_id",
        "payload": f"{Account.__module__}.Account",
        "partitions": 12,
        "cleanup_policy": "compact",
        "compacted": True,
        "retention_ms": None,
        "description": "Latest state of every account.",
        "event_types": ["mainstay.ledger.evt.account.v2"],
    }


def test_rendering_is_canonical() -> None:
    text = render_event_schema(event_schema(PROBE))
    assert text == render_event_schema(event_schema(PROBE))
    assert text.endswith("}\n")
    assert not text.endswith("\n\n")
    assert text.startswith('{\n  "$id": ')
    assert json.loads(text) == json.loads(json.dumps(event_schema(PROBE)))
    keys = list(json.loads(text)["properties"])
    assert keys == sorted(keys)


def test_schemas_of_a_registry_by_topic() -> None:
    registry = TopicRegistry()
    registry.register(ACCOUNTS)
    assert list(event_schemas(registry)) == ["ledger.evt.account.v2"]
