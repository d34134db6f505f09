"""A fuzzing campaign through the real bus: what every service consumes, what is sent to it,
and what became of each message (committed offsets, dead letters).

Every consumed topic gets, in this order: valid payloads keyed by their own aggregate id,
then malformed messages and finally one valid *sentinel*, all under one key (so on one
partition, the sentinel behind the junk). Each message carries a ``fuzz-case`` header; a
dead letter keeps the original headers, so it names the case it came from.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from mainstay_common.bus import build_message, decode_headers
from mainstay_contracts import REGISTRY, Header

from ._payloads import Junk, draw, junk_messages, valid_payloads

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from mainstay_contracts import TopicSpec

__all__ = [
    "CASE_HEADER",
    "Campaign",
    "Case",
    "Consumption",
    "Letter",
    "declared_consumptions",
    "plan_cases",
    "run_campaign",
]

CASE_HEADER = "fuzz-case"
SOURCE = "mainstay/fuzz"
SERVICES = ("execution", "identity", "ledger", "memory", "supervisor", "tools_gateway")
"""The services whose AsyncAPI documents say what the mesh consumes."""


@dataclass(frozen=True)
class Consumption:
    """One consumer group of one service on one topic, as its AsyncAPI document declares it."""

    service: str
    group: str
    topic: str
    tiers: bool
    """Retries go through retry topics (else in place, blocking)."""

    def retry_topics(self, prefix: str) -> list[str]:
        return [f"{prefix}{self.group}.retry.{n}" for n in (1, 2, 3)] if self.tiers else []

    def dlq(self, prefix: str) -> str:
        return f"{prefix}{self.group}.dlq"


def declared_consumptions() -> list[Consumption]:
    """Every consumer group of every service, from the service's own AsyncAPI document
    (which is built from the bus it registers its handlers on)."""
    found = []
    for service in SERVICES:
        module = importlib.import_module(f"mainstay_{service}.asyncapi")
        document = module.asyncapi_document()
        for operation in document["operations"].values():
            if operation["action"] != "receive":
                continue
            channel = operation["channel"]["$ref"].rsplit("/", 1)[-1]
            found.append(
                Consumption(
                    service=service,
                    group=operation["x-consumer-group"],
                    topic=document["channels"][channel]["address"],
                    tiers=operation["x-retry"] == "tiers",
                )
            )
    return sorted(found, key=lambda c: c.group)


@dataclass
class Case:
    """One message sent by the campaign."""

    id: str
    topic: str
    kind: str
    """``valid``, ``sentinel`` or the kind of junk."""
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]
    reason: tuple[str, ...] = ()
    sent: dict[str, tuple[int, int]] = field(default_factory=dict)
    """``(partition, offset)`` it was written at, by topic prefix."""

    def describe(self) -> str:
        shown = self.value if len(self.value) <= 300 else self.value[:300] + b"..."
        changed = {
            name: value for name, value in self.headers if name in _ENVELOPE and name != Header.ID
        }
        return f"{self.id} ({self.kind}) value={shown!r} headers={changed!r}"


_ENVELOPE = {
    Header.SPECVERSION,
    Header.ID,
    Header.TYPE,
    Header.SOURCE,
    Header.TIME,
    Header.CONTENT_TYPE,
}


@dataclass(frozen=True)
class Letter:
    """A dead letter of a group."""

    case: str | None
    headers: dict[str, str]
    value: bytes | None

    @property
    def reason(self) -> str:
        return self.headers.get(Header.ERROR_MESSAGE, "")


@dataclass
class Campaign:
    prefixes: dict[str, str]
    """The topic prefix of each consumer group's service instance."""
    consumptions: list[Consumption]
    cases: list[Case]
    letters: dict[str, list[Letter]] = field(default_factory=dict)
    """Dead letters by consumer group (prefix left out)."""
    committed: dict[str, dict[TopicPartition, int]] = field(default_factory=dict)
    """Committed offsets on the origin topic by consumer group (prefix left out)."""
    settled: bool = False
    """Every group committed everything on its origin and retry topics."""
    lagging: dict[str, dict[str, int]] = field(default_factory=dict)
    """When not settled: per group, the messages each topic still had uncommitted."""

    def cases_of(self, topic: str, *kinds: str) -> list[Case]:
        return [c for c in self.cases if c.topic == topic and (not kinds or c.kind in kinds)]

    def letter_of(self, group: str, case: Case) -> Letter | None:
        return next((x for x in self.letters.get(group, ()) if x.case == case.id), None)


# -- the messages ------------------------------------------------------------------------------


def plan_cases(topics: Iterable[str], *, valid_count: int, junk_per_kind: int) -> list[Case]:
    """The campaign's messages for ``topics``, in sending order."""
    cases: list[Case] = []
    for topic in sorted(set(topics)):
        spec = REGISTRY.get(topic)
        valid = draw(valid_payloads(spec), valid_count, name=topic)
        assert valid, f"no valid {spec.payload.__name__} could be drawn"
        sentinel_key = f"fuzz-sentinel-{topic}".encode()
        for n, payload in enumerate(valid):
            cases.append(_valid_case(spec, f"{topic}/valid-{n}", payload, None))
        for kind, strategy in sorted(junk_messages(spec, valid).items()):
            for n, junk in enumerate(draw(strategy, junk_per_kind, name=f"{topic}/{kind}")):
                case_id = f"{topic}/{kind}-{n}"
                cases.append(_junk_case(spec, case_id, junk, valid[0], sentinel_key))
        cases.append(_valid_case(spec, f"{topic}/sentinel", valid[0], sentinel_key, "sentinel"))
    return cases


def _valid_case(
    spec: TopicSpec[Any],
    case_id: str,
    payload: dict[str, Any],
    key: bytes | None,
    kind: str = "valid",
) -> Case:
    # The envelope is the bus's own; the value is the drawn JSON as it is (unknown
    # fields included), which the bus would have normalised.
    message = build_message(spec, payload, source=SOURCE, correlation_id=f"fuzz-{case_id}")
    return Case(
        id=case_id,
        topic=spec.name,
        kind=kind,
        key=key if key is not None else message.key or b"",
        value=json.dumps(payload).encode(),
        headers=[*_encoded(message.headers), (CASE_HEADER, case_id.encode())],
    )


def _junk_case(
    spec: TopicSpec[Any], case_id: str, junk: Junk, valid: dict[str, Any], key: bytes
) -> Case:
    headers = build_message(spec, valid, source=SOURCE).headers
    for name, value in junk.header_changes.items():
        if value is None:
            headers.pop(name, None)
        else:
            headers[name] = value
    return Case(
        id=case_id,
        topic=spec.name,
        kind=junk.kind,
        key=key,
        value=junk.value if junk.value is not None else json.dumps(valid).encode(),
        headers=[*_encoded(headers), (CASE_HEADER, case_id.encode())],
        reason=junk.reason,
    )


def _encoded(headers: dict[str, str]) -> list[tuple[str, bytes]]:
    return [(name, value.encode()) for name, value in headers.items()]


# -- running it ------------------------------------------------------------------------------


async def run_campaign(
    bootstrap: str,
    prefixes: dict[str, str],
    consumptions: Sequence[Consumption],
    cases: Sequence[Case],
    *,
    settle_s: float,
) -> Campaign:
    """Send each of ``cases`` to every prefix where a group consumes its topic, wait until
    every group has committed all it was sent (or ``settle_s`` passed), then collect every
    group's dead letters. ``prefixes``: the topic prefix of each group's instance."""
    campaign = Campaign(prefixes=prefixes, consumptions=list(consumptions), cases=list(cases))
    targets: dict[str, set[str]] = {}
    for consumption in consumptions:
        targets.setdefault(consumption.topic, set()).add(prefixes[consumption.group])
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for case in cases:
            for prefix in sorted(targets.get(case.topic, ())):
                sent = await producer.send_and_wait(
                    f"{prefix}{case.topic}", case.value, key=case.key, headers=case.headers
                )
                case.sent[prefix] = (sent.partition, sent.offset)
    finally:
        await producer.stop()
    async with _Offsets(bootstrap) as offsets:
        deadline = time.monotonic() + settle_s
        quiet = 0
        # Settled twice in a row, so a message the handlers publish in turn is seen too.
        while quiet < 2 and time.monotonic() < deadline:
            campaign.lagging = await _lag(offsets, prefixes, consumptions)
            quiet = 0 if campaign.lagging else quiet + 1
            await asyncio.sleep(0.5)
        campaign.settled = quiet >= 2
        for consumption in consumptions:
            prefix = prefixes[consumption.group]
            partitions = _partitions(f"{prefix}{consumption.topic}", consumption.topic)
            campaign.committed[consumption.group] = await offsets.committed(
                f"{prefix}{consumption.group}", partitions
            )
            campaign.letters[consumption.group] = await offsets.read_all(
                consumption.dlq(prefix), REGISTRY.get(consumption.topic).partitions
            )
    return campaign


def _partitions(topic: str, registered: str) -> list[TopicPartition]:
    return [TopicPartition(topic, p) for p in range(REGISTRY.get(registered).partitions)]


async def _lag(
    offsets: _Offsets, prefixes: dict[str, str], consumptions: Sequence[Consumption]
) -> dict[str, dict[str, int]]:
    lagging: dict[str, dict[str, int]] = {}
    for consumption in consumptions:
        prefix = prefixes[consumption.group]
        topics = [f"{prefix}{consumption.topic}", *consumption.retry_topics(prefix)]
        partitions = [tp for t in topics for tp in _partitions(t, consumption.topic)]
        ends = await offsets.ends(partitions)
        committed = await offsets.committed(f"{prefix}{consumption.group}", partitions)
        behind: dict[str, int] = {}
        for tp, end in ends.items():
            if end > committed.get(tp, 0):
                behind[tp.topic] = behind.get(tp.topic, 0) + end - committed.get(tp, 0)
        if behind:
            lagging[consumption.group] = behind
    return lagging


class _Offsets:
    """End and committed offsets, and whole topics, read without a consumer group."""

    def __init__(self, bootstrap: str) -> None:
        self._admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
        )

    async def __aenter__(self) -> _Offsets:
        await self._admin.start()
        await self._consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._consumer.stop()
        await self._admin.close()

    async def ends(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        return dict(await self._consumer.end_offsets(partitions))

    async def committed(
        self, group: str, partitions: list[TopicPartition]
    ) -> dict[TopicPartition, int]:
        answer = await self._admin.list_consumer_group_offsets(group, partitions=partitions)
        return {tp: meta.offset for tp, meta in answer.items() if meta.offset >= 0}

    async def read_all(self, topic: str, partition_count: int) -> list[Letter]:
        partitions = [TopicPartition(topic, p) for p in range(partition_count)]
        ends = await self.ends(partitions)
        wanted = {tp: end for tp, end in ends.items() if end > 0}
        letters: list[Letter] = []
        if not wanted:
            return letters
        self._consumer.assign(list(wanted))
        await self._consumer.seek_to_beginning(*wanted)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and await self._behind(wanted):
            batch = await self._consumer.getmany(*wanted, timeout_ms=300)
            for records in batch.values():
                for record in records:
                    headers = decode_headers(record.headers)
                    letters.append(Letter(headers.get(CASE_HEADER), headers, record.value))
        with contextlib.suppress(Exception):
            self._consumer.unsubscribe()
        return letters

    async def _behind(self, ends: dict[TopicPartition, int]) -> bool:
        for tp, end in ends.items():
            if await self._consumer.position(tp) < end:
                return True
        return False
