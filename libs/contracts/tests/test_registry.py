"""The registry enforces the naming rule and declares every topic once."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from mainstay_contracts import REGISTRY, TopicRegistry, TopicSpec, topic_name_problem


class Order(BaseModel):
    order_id: str
    amount: int = 0


class OtherOrder(BaseModel):
    order_id: str


def spec(name: str = "shop.evt.order.v1", **overrides: Any) -> TopicSpec[Any]:
    fields: dict[str, Any] = {
        "name": name,
        "owner": "shop",
        "kind": "evt",
        "key_field": "order_id",
        "payload": Order,
    }
    fields.update(overrides)
    return TopicSpec(**fields)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("shop.evt.order_placed.v1", "contains an underscore; use hyphens inside a segment"),
        ("shop.evt.Order.v1", "must be lowercase"),
        ("shop.evt.order", "must look like <owner>.<evt|cmd>.<subject>.v<major>"),
        ("shop.event.order.v1", "must look like <owner>.<evt|cmd>.<subject>.v<major>"),
        ("shop.evt.order.v0", "must look like <owner>.<evt|cmd>.<subject>.v<major>"),
        ("shop.evt.order-.v1", "must look like <owner>.<evt|cmd>.<subject>.v<major>"),
        ("shop.evt.order.placed.v1", "must look like <owner>.<evt|cmd>.<subject>.v<major>"),
    ],
)
def test_bad_topic_names_are_rejected_with_the_reason(name: str, message: str) -> None:
    assert topic_name_problem(name) == f"topic {name!r} {message}"
    with pytest.raises(ValueError, match=r"must|underscore") as caught:
        spec(name)
    assert str(caught.value) == f"topic {name!r} {message}"


@pytest.mark.parametrize("name", ["shop.evt.order.v1", "tools-gateway.cmd.tool-call.v12"])
def test_good_topic_names_pass(name: str) -> None:
    assert topic_name_problem(name) is None


def test_owner_must_match_the_name() -> None:
    with pytest.raises(
        ValueError, match=r"'shop.evt.order.v1' must start with its owner 'billing'"
    ):
        spec(owner="billing")


def test_kind_must_match_the_name() -> None:
    with pytest.raises(ValueError, match=r"'shop.evt.order.v1' is declared as kind 'cmd'"):
        spec(kind="cmd")


def test_key_field_must_be_a_field_of_the_payload() -> None:
    with pytest.raises(ValueError, match=r"key field 'id' is not a field of Order"):
        spec(key_field="id")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"partitions": 0}, "partitions must be >= 1"),
        ({"retention_ms": 0}, "retention_ms must be positive, -1"),
        ({"retention_ms": -5}, "retention_ms must be positive, -1"),
    ],
)
def test_sizes_are_validated(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        spec(**overrides)


def test_infinite_and_default_retention_are_allowed() -> None:
    assert spec(retention_ms=-1).topic_config() == {"retention.ms": "-1"}
    assert spec(retention_ms=None).topic_config() == {}
    assert spec(compacted=True).topic_config() == {"cleanup.policy": "compact"}


def test_a_topic_declared_twice_is_rejected() -> None:
    registry = TopicRegistry()
    registry.register(spec())
    with pytest.raises(ValueError, match=r"'shop.evt.order.v1' is declared twice") as caught:
        registry.register(spec(payload=OtherOrder))
    assert f"{Order.__module__}.Order and {OtherOrder.__module__}.OtherOrder" in str(caught.value)
    with pytest.raises(ValueError, match="declared twice"):
        registry.register(spec(partitions=12))


def test_registering_the_same_spec_again_is_a_no_op() -> None:
    registry = TopicRegistry()
    first = registry.register(spec())
    assert registry.register(spec()) == first
    assert len(registry) == 1


def test_registry_lookup_and_order() -> None:
    registry = TopicRegistry()
    registry.register(spec("shop.evt.order.v2"))
    registry.register(spec("shop.cmd.order.v1", kind="cmd"))
    assert [s.name for s in registry] == ["shop.cmd.order.v1", "shop.evt.order.v2"]
    assert "shop.cmd.order.v1" in registry
    assert registry.get("shop.evt.order.v2").major_version == 2
    with pytest.raises(KeyError, match=r"no topic named 'shop\.evt\.nope\.v1' is registered"):
        registry.get("shop.evt.nope.v1")


def test_key_of_reads_the_key_field() -> None:
    assert spec().key_of(Order(order_id="o-1")) == "o-1"
    assert spec().default_event_type == "mainstay.shop.evt.order.v1"


def test_every_registered_topic_follows_the_rules() -> None:
    assert len(REGISTRY) >= 1
    for topic in REGISTRY:
        assert topic_name_problem(topic.name) is None
        assert topic.name.startswith(f"{topic.owner}.{topic.kind}.")
