"""Dead-letter triage over HTTP against the real broker and PostgreSQL: list, inspect,
replay (to the failing group only, past its inbox), purge, audit."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pytest
from aiokafka import AIOKafkaProducer

from mainstay_common.bus import Bus, dlq_topic, group_id
from mainstay_common.db import LIBRARY_MIGRATIONS, Database
from mainstay_common.errors import RuleViolation
from mainstay_common.settings import PostgresSettings, RetrySettings
from mainstay_contracts import Header
from mainstay_contracts.supervisor import PROBE, ProbeCommand

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from mainstay_common.bus import Event
    from mainstay_common.db import Connection

    from .conftest import Supervisor

pytestmark = pytest.mark.real

OPERATOR = ("supervisor:dlq:read", "supervisor:dlq:admin", "*")


@dataclass
class Handlers:
    """Two consumer groups of one service on the probe topic: ``work`` (transactional, with
    an inbox) fails permanently while ``failing`` is set; ``watch`` takes everything."""

    service: str
    dlq: str
    database: Database
    failing: bool = True
    handled: list[Event[ProbeCommand]] = field(default_factory=list)
    watched: list[Event[ProbeCommand]] = field(default_factory=list)

    def probe_id(self, name: str) -> str:
        return f"{self.service}-{name}"

    def mine(self, event: Event[ProbeCommand]) -> bool:
        # The probe topic is shared by the module's tests; each minds its own probes.
        return event.payload.probe_id.startswith(f"{self.service}-")


@pytest.fixture
async def handlers(
    supervisor: Supervisor, postgres_dsn: str, pg_schema: str
) -> AsyncIterator[Handlers]:
    service = f"h{uuid.uuid4().hex[:8]}"
    group = group_id(service, "work", prefix=supervisor.kafka.topic_prefix)
    async with Database(PostgresSettings(dsn=postgres_dsn), schema=pg_schema) as database:
        await database.migrate(LIBRARY_MIGRATIONS)
        state = Handlers(service=service, dlq=dlq_topic(group), database=database)
        bus = Bus(
            service=service,
            kafka=supervisor.kafka,
            retry=RetrySettings(tier_delays_s=[0.2, 0.2, 0.2]),
            shutdown_grace_s=5.0,
        )

        @bus.transactional_subscriber(PROBE, handler="work", database=database)
        async def work(event: Event[ProbeCommand], tx: Connection) -> None:
            if not state.mine(event):
                return
            if state.failing:
                raise RuleViolation(f"probe {event.payload.probe_id} is not welcome yet")
            state.handled.append(event)

        @bus.subscriber(PROBE, handler="watch")
        async def watch(event: Event[ProbeCommand]) -> None:
            if state.mine(event):
                state.watched.append(event)

        async with bus:
            yield state


async def send_probe(supervisor: Supervisor, probe_id: str, note: str = "") -> str:
    probe = ProbeCommand(probe_id=probe_id, sent_at=datetime.now(UTC), note=note)
    event_id: str = await supervisor.bus.publish(PROBE, probe)
    return event_id


def operator(supervisor: Supervisor) -> dict[str, str]:
    headers: dict[str, str] = supervisor.headers("ops-tenant", OPERATOR)
    return headers


async def counts(supervisor: Supervisor, topic: str) -> dict[str, Any]:
    answer = await supervisor.http.get("/v1/dlq", headers=operator(supervisor))
    assert answer.status_code == 200, answer.text
    entries: list[dict[str, Any]] = [d for d in answer.json()["dlqs"] if d["topic"] == topic]
    assert len(entries) == 1, entries
    return entries[0]


async def counts_when(
    supervisor: Supervisor, topic: str, ready: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    for _ in range(400):
        entry = await counts(supervisor, topic)
        if ready(entry):
            return entry
        await asyncio.sleep(0.05)
    raise AssertionError(f"{topic} never got there; last counts {entry}")


async def until(predicate: Callable[[], bool], what: str) -> None:
    for _ in range(400):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def letters(supervisor: Supervisor, topic: str, **params: Any) -> dict[str, Any]:
    answer = await supervisor.http.get(
        f"/v1/dlq/{topic}/letters", params=params, headers=operator(supervisor)
    )
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def path(letter: dict[str, Any]) -> str:
    return f"/v1/dlq/{letter['topic']}/letters/{letter['partition']}/{letter['offset']}"


async def test_a_dead_letter_is_inspected_and_replayed_to_its_group_only(
    supervisor: Supervisor, handlers: Handlers
) -> None:
    probe_id = handlers.probe_id("first")
    old_id = await send_probe(supervisor, probe_id, note="first")
    dlq = handlers.dlq
    entry = await counts_when(supervisor, dlq, lambda c: c["total"] == 1)
    assert entry == {
        "topic": dlq,
        "group": dlq.removesuffix(".dlq"),
        "partitions": PROBE.partitions,
        "total": 1,
        "pending": 1,
        "replayed": 0,
        "purged": 0,
    }
    # the watching group handled the original, the working group dead-lettered it
    await until(lambda: len(handlers.watched) == 1, "the watcher")

    [summary] = (await letters(supervisor, dlq))["letters"]
    assert (summary["ce_id"], summary["key"], summary["status"]) == (old_id, probe_id, "pending")
    assert summary["ce_type"] == PROBE.default_event_type
    assert summary["origin_topic"] == f"{supervisor.kafka.topic_prefix}{PROBE.name}"
    assert summary["error"] == {
        "class": "permanent",
        "type": "RuleViolation",
        "message": f"probe {probe_id} is not welcome yet",
    }
    assert summary["failed_at"]

    answer = await supervisor.http.get(path(summary), headers=operator(supervisor))
    assert answer.status_code == 200, answer.text
    letter = answer.json()
    assert letter["payload_encoding"] == "json"
    assert (letter["payload"]["probe_id"], letter["payload"]["note"]) == (probe_id, "first")
    assert letter["headers"][Header.ID] == old_id
    assert letter["headers"][Header.ERROR_TYPE] == "RuleViolation"
    assert letter["headers"][Header.ATTEMPTS] == "1"
    assert letter["error"]["class"] == "permanent"
    assert letter["origin"]["topic"] == summary["origin_topic"]
    assert (letter["status"], letter["action"], letter["history"]) == ("pending", None, [])

    handlers.failing = False
    answer = await supervisor.http.post(f"{path(summary)}/replay", headers=operator(supervisor))
    assert answer.status_code == 200, answer.text
    replayed = answer.json()
    new_id = replayed["new_ce_id"]
    assert new_id != old_id
    assert (replayed["ce_id"], replayed["replay_for"]) == (old_id, summary["topic"][:-4])

    await until(lambda: len(handlers.handled) == 1, "the replay to reach the working group")
    [event] = handlers.handled
    assert (event.id, event.key, event.payload.note) == (new_id, probe_id, "first")
    assert event.headers[Header.REPLAY_OF] == old_id
    assert event.headers[Header.REPLAY_FOR] == handlers.dlq.removesuffix(".dlq")
    assert event.attempt == 1  # the retry bookkeeping started afresh
    for name in (Header.ERROR_CLASS, Header.ERROR_MESSAGE, Header.ORIGIN_TOPIC, Header.FAILED_AT):
        assert name not in event.headers
    inbox = await handlers.database.fetch("SELECT event_id FROM inbox")
    assert [row["event_id"] for row in inbox] == [new_id]

    # A later message with the same key arrives after the replay on the same partition:
    # once both groups handled it, the watching group has passed the replay by.
    await send_probe(supervisor, probe_id, note="marker")
    await until(lambda: len(handlers.watched) == 2 and len(handlers.handled) == 2, "the marker")
    assert [e.payload.note for e in handlers.watched] == ["first", "marker"]
    assert [e.payload.note for e in handlers.handled] == ["first", "marker"]

    again = await supervisor.http.post(f"{path(summary)}/replay", headers=operator(supervisor))
    assert again.status_code == 409, again.text
    assert "already replayed by ops" in again.json()["error"]["message"]
    assert new_id in again.json()["error"]["message"]

    entry = await counts(supervisor, dlq)
    assert (entry["total"], entry["pending"], entry["replayed"]) == (1, 0, 1)
    assert (await letters(supervisor, dlq))["letters"] == []
    [done] = (await letters(supervisor, dlq, status="replayed"))["letters"]
    assert (done["status"], done["action"]["by"], done["action"]["new_ce_id"]) == (
        "replayed",
        "ops",
        new_id,
    )
    letter = (await supervisor.http.get(path(summary), headers=operator(supervisor))).json()
    assert [(h["action"], h["outcome"]) for h in letter["history"]] == [
        ("inspect", "ok"),
        ("replay", "ok"),
        ("replay", "refused"),
    ]
    assert letter["history"][1]["details"]["new_ce_id"] == new_id
    assert letter["history"][1]["tenant"] == "ops-tenant"


async def test_a_purged_letter_is_hidden_and_audited(
    supervisor: Supervisor, handlers: Handlers
) -> None:
    ids = [await send_probe(supervisor, handlers.probe_id(n)) for n in ("a", "b", "c")]
    dlq = handlers.dlq
    await counts_when(supervisor, dlq, lambda c: c["total"] == 3)
    # pages of one, in (partition, offset) order
    seen: list[dict[str, Any]] = []
    after = None
    for _ in range(4):
        page = await letters(supervisor, dlq, limit=1, **({"after": after} if after else {}))
        seen.extend(page["letters"])
        after = page["next"]
        if after is None:
            break
    assert sorted(s["ce_id"] for s in seen) == sorted(ids)
    assert [(s["partition"], s["offset"]) for s in seen] == sorted(
        (s["partition"], s["offset"]) for s in seen
    )
    target = next(s for s in seen if s["ce_id"] == ids[0])

    for body in (None, {}, {"reason": "   "}, {"reason": "x", "extra": 1}):
        refused = await supervisor.http.post(
            f"{path(target)}/purge", json=body, headers=operator(supervisor)
        )
        assert refused.status_code == 422, (body, refused.text)
        assert refused.json()["error"]["type"] == "InvalidArgument"
    answer = await supervisor.http.post(
        f"{path(target)}/purge",
        json={"reason": "duplicate of INC-42"},
        headers=operator(supervisor),
    )
    assert answer.status_code == 200, answer.text

    pending = (await letters(supervisor, dlq))["letters"]
    assert sorted(s["ce_id"] for s in pending) == sorted(ids[1:])
    [purged] = (await letters(supervisor, dlq, status="purged"))["letters"]
    assert purged["ce_id"] == ids[0]
    assert (purged["action"]["reason"], purged["action"]["by"]) == ("duplicate of INC-42", "ops")
    everything = (await letters(supervisor, dlq, status="all"))["letters"]
    assert {s["ce_id"]: s["status"] for s in everything} == {
        ids[0]: "purged",
        ids[1]: "pending",
        ids[2]: "pending",
    }
    entry = await counts(supervisor, dlq)
    assert (entry["total"], entry["pending"], entry["purged"]) == (3, 2, 1)

    again = await supervisor.http.post(f"{path(target)}/replay", headers=operator(supervisor))
    assert again.status_code == 409, again.text
    assert "already purged by ops" in again.json()["error"]["message"]
    assert "duplicate of INC-42" in again.json()["error"]["message"]

    answer = await supervisor.http.post(
        f"/v1/dlq/{dlq}/purge", json={"reason": "load test leftovers"}, headers=operator(supervisor)
    )
    assert answer.json() == {"topic": dlq, "purged": 2}
    entry = await counts(supervisor, dlq)
    assert (entry["total"], entry["pending"], entry["purged"]) == (3, 0, 3)

    answer = await supervisor.http.get(
        "/v1/dlq/audit", params={"topic": dlq}, headers=operator(supervisor)
    )
    assert answer.status_code == 200, answer.text
    purges = [e for e in answer.json()["entries"] if e["action"] == "purge"]
    # newest first: the purge of the rest (its summary, then each letter), then the first
    assert purges[0]["details"] == {
        "all": True,
        "purged": 2,
        "unreplayable": 0,
        "reason": "load test leftovers",
    }
    first = next(e for e in purges if e["details"].get("ce_id") == ids[0])
    assert (first["actor"], first["tenant"], first["outcome"]) == ("ops", "ops-tenant", "ok")
    assert first["details"]["reason"] == "duplicate of INC-42"
    assert (first["partition"], first["offset"]) == (target["partition"], target["offset"])
    assert len([e for e in purges if e["partition"] is not None]) == 3


async def test_replay_all_sends_every_pending_letter_once(
    supervisor: Supervisor, handlers: Handlers
) -> None:
    ids = [await send_probe(supervisor, handlers.probe_id(f"p{n}")) for n in range(4)]
    dlq = handlers.dlq
    await counts_when(supervisor, dlq, lambda c: c["total"] == 4)
    # one is purged first, so replay-all leaves it alone
    first = next(s for s in (await letters(supervisor, dlq))["letters"] if s["ce_id"] == ids[0])
    answer = await supervisor.http.post(
        f"{path(first)}/purge", json={"reason": "not wanted"}, headers=operator(supervisor)
    )
    assert answer.status_code == 200, answer.text

    handlers.failing = False
    answer = await supervisor.http.post(f"/v1/dlq/{dlq}/replay", headers=operator(supervisor))
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"topic": dlq, "replayed": 3, "unreplayable": 0}
    await until(lambda: len(handlers.handled) == 3, "every replay")
    assert sorted(e.headers[Header.REPLAY_OF] for e in handlers.handled) == sorted(ids[1:])
    assert not {e.id for e in handlers.handled} & set(ids)

    entry = await counts(supervisor, dlq)
    assert (entry["pending"], entry["replayed"], entry["purged"]) == (0, 3, 1)
    answer = await supervisor.http.post(f"/v1/dlq/{dlq}/replay", headers=operator(supervisor))
    assert answer.json() == {"topic": dlq, "replayed": 0, "unreplayable": 0}
    await asyncio.sleep(0.5)  # a stray second copy would show up by now
    assert len(handlers.handled) == 3


async def test_a_letter_without_an_origin_cannot_be_replayed(
    supervisor: Supervisor, handlers: Handlers
) -> None:
    # a letter some other tool wrote to the DLQ, without the dead-letter headers
    producer = AIOKafkaProducer(bootstrap_servers=supervisor.kafka.bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(
            handlers.dlq, b"\x00\xffnot json", key=b"k", headers=[(Header.ID, b"foreign-1")]
        )
    finally:
        await producer.stop()
    dlq = handlers.dlq
    await counts_when(supervisor, dlq, lambda c: c["total"] == 1)
    [summary] = (await letters(supervisor, dlq))["letters"]
    letter = (await supervisor.http.get(path(summary), headers=operator(supervisor))).json()
    assert letter["payload_encoding"] == "base64"
    assert letter["payload"] == "AP9ub3QganNvbg=="

    answer = await supervisor.http.post(f"{path(summary)}/replay", headers=operator(supervisor))
    assert answer.status_code == 422, answer.text
    assert Header.ORIGIN_TOPIC in answer.json()["error"]["message"]
    answer = await supervisor.http.post(f"/v1/dlq/{dlq}/replay", headers=operator(supervisor))
    assert answer.json() == {"topic": dlq, "replayed": 0, "unreplayable": 1}
    assert (await counts(supervisor, dlq))["pending"] == 1


async def test_bad_requests_are_refused_naming_the_problem(
    supervisor: Supervisor, handlers: Handlers
) -> None:
    http, dlq, prefix = supervisor.http, handlers.dlq, supervisor.kafka.topic_prefix
    ops = operator(supervisor)

    unknown = f"{prefix}nobody.work.dlq"
    answer = await http.get(f"/v1/dlq/{unknown}/letters", headers=ops)
    assert (answer.status_code, unknown in answer.text) == (404, True)
    answer = await http.post(f"/v1/dlq/{unknown}/replay", headers=ops)
    assert answer.status_code == 404, answer.text
    origin = f"{prefix}{PROBE.name}"
    answer = await http.get(f"/v1/dlq/{origin}/letters", headers=ops)
    assert answer.status_code == 400, answer.text
    assert "not a dead-letter topic" in answer.text
    for where in ("0/999", "99/0"):
        answer = await http.get(f"/v1/dlq/{dlq}/letters/{where}", headers=ops)
        assert answer.status_code == 404, answer.text
        assert dlq in answer.text
    answer = await http.post(f"/v1/dlq/{dlq}/letters/0/999/replay", headers=ops)
    assert answer.status_code == 404, answer.text
    answer = await http.get(f"/v1/dlq/{dlq}/letters", params={"after": "x"}, headers=ops)
    assert (answer.status_code, "after" in answer.text) == (400, True)
    answer = await http.get(f"/v1/dlq/{dlq}/letters", params={"status": "lost"}, headers=ops)
    assert answer.status_code == 422, answer.text

    assert (await http.get("/v1/dlq")).status_code == 401
    one_tenant = supervisor.headers("ops-tenant", ("supervisor:dlq:read", "supervisor:dlq:admin"))
    answer = await http.get("/v1/dlq", headers=one_tenant)
    assert (answer.status_code, "'*' scope" in answer.text) == (403, True)
    answer = await http.get("/v1/dlq", headers=supervisor.headers("t", ("supervisor:read",)))
    assert answer.status_code == 403
    assert "supervisor:dlq:read" in answer.text
    answer = await http.post(
        f"/v1/dlq/{dlq}/replay", headers=supervisor.headers("t", ("supervisor:dlq:read",))
    )
    assert answer.status_code == 403
    assert "supervisor:dlq:admin" in answer.text
