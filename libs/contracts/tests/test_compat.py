"""Compatibility within a major version: what breaks, what does not, and the message."""

from __future__ import annotations

import copy
import enum
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mainstay_contracts import (
    TopicSpec,
    compare_schemas,
    event_schema,
    find_breaking_changes,
    render_event_schema,
)
from mainstay_contracts.supervisor import PROBE

CMD = "shop.cmd.order.v1"
EVT = "shop.evt.order.v1"


def schema_of(model: type[BaseModel], topic: str = CMD, **options: Any) -> dict[str, Any]:
    owner, kind = topic.split(".")[:2]
    spec = TopicSpec(
        name=topic, owner=owner, kind=kind, key_field="order_id", payload=model, **options
    )
    loaded: dict[str, Any] = json.loads(render_event_schema(event_schema(spec)))
    return loaded


def breaks(old: type[BaseModel], new: type[BaseModel], topic: str = CMD) -> list[str]:
    return [
        str(change)
        for change in compare_schemas(topic, schema_of(old, topic), schema_of(new, topic))
    ]


class V1(BaseModel):
    order_id: str
    quantity: int = 1
    note: str = ""


# -- fine --------------------------------------------------------------------------


class AddsOptional(BaseModel):
    """Docstrings, titles and defaults may change freely."""

    order_id: str = Field(title="Order")
    quantity: int = 2
    note: str = ""
    gift: bool = False
    coupon: str | None = None


def test_adding_an_optional_field_is_compatible() -> None:
    assert breaks(V1, AddsOptional, CMD) == []
    assert breaks(V1, AddsOptional, EVT) == []


def test_the_committed_probe_schema_is_compatible_with_itself() -> None:
    schema = json.loads(render_event_schema(event_schema(PROBE)))
    assert compare_schemas(PROBE.name, schema, copy.deepcopy(schema)) == []


# -- fields ------------------------------------------------------------------------


class RemovesNote(BaseModel):
    order_id: str
    quantity: int = 1


def test_removing_a_field_breaks() -> None:
    assert breaks(V1, RemovesNote) == ["shop.cmd.order.v1: field 'note' was removed"]
    assert breaks(V1, RemovesNote, EVT) == ["shop.evt.order.v1: field 'note' was removed"]


class AddsRequired(BaseModel):
    order_id: str
    quantity: int = 1
    note: str = ""
    customer_id: str


class RequiresQuantity(BaseModel):
    order_id: str
    quantity: int
    note: str = ""


def test_a_new_required_field_breaks() -> None:
    assert breaks(V1, AddsRequired) == [
        "shop.cmd.order.v1: field 'customer_id' was added as a required field"
    ]


def test_making_a_field_required_breaks() -> None:
    assert breaks(V1, RequiresQuantity) == ["shop.cmd.order.v1: field 'quantity' became required"]


def test_making_a_field_optional_breaks_only_an_event() -> None:
    assert breaks(RequiresQuantity, V1, CMD) == []
    assert breaks(RequiresQuantity, V1, EVT) == [
        "shop.evt.order.v1: field 'quantity' became optional; consumers of the old schema require it"
    ]


class Forbids(BaseModel):
    model_config = ConfigDict(extra="forbid")

    order_id: str
    quantity: int = 1
    note: str = ""


def test_forbidding_unknown_fields_breaks() -> None:
    assert breaks(V1, Forbids) == [
        "shop.cmd.order.v1: no longer accepts unknown fields (additionalProperties: false)"
    ]


# -- types -------------------------------------------------------------------------


def test_changed_type_names_topic_field_and_types() -> None:
    committed = json.loads(render_event_schema(event_schema(PROBE)))
    current = copy.deepcopy(committed)
    current["properties"]["fail_attempts"] = {"default": "0", "type": "string"}
    assert [str(c) for c in compare_schemas(PROBE.name, committed, current)] == [
        "supervisor.cmd.probe.v1: field 'fail_attempts' changed type integer -> string"
    ]


class NullableQuantity(BaseModel):
    order_id: str
    quantity: int | None = 1
    note: str = ""


def test_nullability_changes_break_both_ways() -> None:
    assert breaks(V1, NullableQuantity) == [
        "shop.cmd.order.v1: field 'quantity' changed type integer -> integer | null"
    ]
    assert breaks(NullableQuantity, V1) == [
        "shop.cmd.order.v1: field 'quantity' changed type integer | null -> integer"
    ]


class WhenAsDate(BaseModel):
    order_id: str
    when: str = Field(default="", json_schema_extra={"format": "date-time"})


class WhenAsText(BaseModel):
    order_id: str
    when: str = ""


def test_a_changed_string_format_breaks() -> None:
    assert breaks(WhenAsDate, WhenAsText) == [
        "shop.cmd.order.v1: field 'when' changed format date-time -> none"
    ]


# -- nested models, arrays, maps ---------------------------------------------------


class Address(BaseModel):
    city: str
    zip: str = ""


class AddressWithNumericZip(BaseModel):
    city: str
    zip: int = 0


class Line(BaseModel):
    sku: str
    count: int = 1


class LineWithoutSku(BaseModel):
    count: int = 1


class Nested(BaseModel):
    order_id: str
    address: Address
    lines: list[Line] = []
    labels: dict[str, int] = {}


class NestedChanged(BaseModel):
    order_id: str
    address: AddressWithNumericZip
    lines: list[LineWithoutSku] = []
    labels: dict[str, str] = {}


def test_changes_inside_nested_models_arrays_and_maps_break() -> None:
    assert breaks(Nested, NestedChanged) == [
        "shop.cmd.order.v1: field 'address.zip' changed type string -> integer",
        "shop.cmd.order.v1: field 'labels.*' changed type integer -> string",
        "shop.cmd.order.v1: field 'lines[].sku' was removed",
    ]


class Tags(BaseModel):
    order_id: str
    tags: list[str] = []


class NumericTags(BaseModel):
    order_id: str
    tags: list[int] = []


def test_array_item_type_change_breaks() -> None:
    assert breaks(Tags, NumericTags) == [
        "shop.cmd.order.v1: field 'tags[]' changed type string -> integer"
    ]


class Node(BaseModel):
    order_id: str = ""
    label: str = ""
    children: list[Node] = []


class Node2(BaseModel):
    order_id: str = ""
    label: int = 0
    children: list[Node2] = []


def test_recursive_models_terminate_and_report_once() -> None:
    assert breaks(Node, Node2) == [
        "shop.cmd.order.v1: field 'label' changed type string -> integer",
    ]


# -- enumerations and unions -------------------------------------------------------


class Status(enum.StrEnum):
    OPEN = "open"
    PAID = "paid"
    SHIPPED = "shipped"


class FewerStatus(enum.StrEnum):
    OPEN = "open"
    PAID = "paid"


class WithStatus(BaseModel):
    order_id: str
    status: Status = Status.OPEN
    channel: Literal["web", "shop"] | None = None


class WithFewerStatus(BaseModel):
    order_id: str
    status: FewerStatus = FewerStatus.OPEN
    channel: Literal["web"] | None = None


class WithMoreChannels(BaseModel):
    order_id: str
    status: Status = Status.OPEN
    channel: Literal["web", "shop", "phone"] | None = None


def test_an_enum_losing_values_breaks() -> None:
    assert breaks(WithStatus, WithFewerStatus) == [
        "shop.cmd.order.v1: field 'channel' lost enum values \"shop\"",
        "shop.cmd.order.v1: field 'status' lost enum values \"shipped\"",
    ]


def test_an_enum_gaining_values_breaks_only_an_event() -> None:
    assert breaks(WithStatus, WithMoreChannels, CMD) == []
    assert breaks(WithStatus, WithMoreChannels, EVT) == [
        "shop.evt.order.v1: field 'channel' gained enum values \"phone\" that consumers "
        "of the old schema reject"
    ]


class Card(BaseModel):
    method: Literal["card"] = "card"
    last4: str


class Cash(BaseModel):
    method: Literal["cash"] = "cash"


class CardV2(BaseModel):
    method: Literal["card"] = "card"
    last4: int


class Paid(BaseModel):
    order_id: str
    payment: Card | Cash = Field(discriminator="method")


class PaidByCard(BaseModel):
    order_id: str
    payment: CardV2 = Field(discriminator="method")


def test_a_union_losing_a_variant_or_changing_one_breaks() -> None:
    assert breaks(Paid, PaidByCard) == [
        "shop.cmd.order.v1: field 'payment' lost union variant method=\"cash\"",
        "shop.cmd.order.v1: field 'payment.last4' changed type string -> integer",
    ]


# -- value constraints ---------------------------------------------------------------


class ShortNote(BaseModel):
    order_id: str
    note: str = Field(default="", max_length=100)


class LongNote(BaseModel):
    order_id: str
    note: str = Field(default="", max_length=1000)


def test_narrowing_breaks_a_command_and_widening_breaks_an_event() -> None:
    assert breaks(LongNote, ShortNote, CMD) == [
        "shop.cmd.order.v1: field 'note' tightened maxLength 1000 -> 100"
    ]
    assert breaks(LongNote, ShortNote, EVT) == []
    assert breaks(ShortNote, LongNote, CMD) == []
    assert breaks(ShortNote, LongNote, EVT) == [
        "shop.evt.order.v1: field 'note' loosened maxLength 100 -> 1000"
    ]


# -- topic level -------------------------------------------------------------------


def test_changing_the_key_field_or_shrinking_partitions_breaks() -> None:
    old = schema_of(V1, partitions=6)
    new = schema_of(V1, partitions=3)
    new["x-mainstay-topic"]["key_field"] = "note"
    assert [str(c) for c in compare_schemas(CMD, old, new)] == [
        "shop.cmd.order.v1: key field changed 'order_id' -> 'note' (messages of one entity "
        "would land on different partitions)",
        "shop.cmd.order.v1: partitions reduced 6 -> 3 (Kafka cannot shrink a topic)",
    ]
    assert compare_schemas(CMD, new, schema_of(V1, partitions=12))[1:] == []


def test_a_topic_removed_within_its_version_breaks() -> None:
    committed = {CMD: schema_of(V1), EVT: schema_of(V1, EVT)}
    changes = find_breaking_changes(committed, {EVT: schema_of(AddsOptional, EVT)})
    assert [str(c) for c in changes] == [
        "shop.cmd.order.v1: is committed but no longer registered; removing a topic within v1 "
        "is breaking (keep it registered, or delete its committed schema deliberately once "
        "no producer or consumer uses it)"
    ]
    assert changes[0].topic == CMD
    assert changes[0].path == ""


def test_a_new_topic_is_fine() -> None:
    assert find_breaking_changes({}, {CMD: schema_of(V1)}) == []
