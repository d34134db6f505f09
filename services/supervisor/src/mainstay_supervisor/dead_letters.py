"""Dead-letter triage: every DLQ with its counts, and inspecting, replaying and purging letters.

A letter is a record of a ``<group>.dlq`` topic, named by (topic, partition,
offset). Letters stay on the broker and are read by a consumer that joins no
group, so nothing is committed and no group is disturbed. What an operator
did to a letter lives in PostgreSQL, one row per letter (its key makes a
second replay or purge impossible, even when two operators race):

- **replay** sends the letter back to its origin topic through the outbox, in
  the transaction that records it: the same key and value, the original
  headers minus the retry and dead-letter bookkeeping, a new ``ce_id`` (no
  inbox takes it for the original), ``mainstay-replay-of`` (the old ``ce_id``)
  and ``mainstay-replay-for`` (the group that failed it: every other group on
  the origin topic handled the original already and skips the replay);
- **purge** is logical: the broker keeps the record until the DLQ retention
  (30 days) deletes it, but a purged letter is no longer pending, listed by
  default or replayable.

Every action, read or write, refused or done, is written to the audit table.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from mainstay_common.bus import OutgoingMessage
from mainstay_common.errors import (
    AlreadyExists,
    InvalidArgument,
    NotFound,
    RuleViolation,
    map_asyncpg_errors,
)
from mainstay_contracts import Header
from mainstay_supervisor.store.broker import DLQ_SUFFIX

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from datetime import datetime

    import asyncpg

    from mainstay_common.auth import Principal
    from mainstay_common.db import Connection, Database, Outbox
    from mainstay_supervisor.store.broker import Bounds, Broker, BrokerReader, Letter

__all__ = ["DeadLetters", "LetterState", "StatusFilter", "replay_message"]

Action = Literal["list", "inspect", "replay", "purge"]
Acted = Literal["replayed", "purged"]
StatusFilter = Literal["pending", "replayed", "purged", "all"]

_log = logging.getLogger("mainstay.supervisor.dead_letters")
# Retry and dead-letter bookkeeping a replay must not carry: it starts afresh.
_DROPPED_PREFIXES = ("mainstay-error-", "mainstay-origin-")
_DROPPED = frozenset(
    {Header.ATTEMPTS, Header.FAILED_AT, Header.NOT_BEFORE, Header.REPLAY_OF, Header.REPLAY_FOR}
)


@dataclass(frozen=True)
class LetterState:
    """What was done to a letter: replayed or purged, by whom, when and why."""

    status: Acted
    actor: str
    tenant: str
    at: datetime
    reason: str
    new_ce_id: str | None

    @classmethod
    def of(cls, row: asyncpg.Record) -> LetterState:
        return cls(
            status=row["status"],
            actor=row["actor"],
            tenant=row["tenant"],
            at=row["at"],
            reason=row["reason"],
            new_ce_id=row["new_ce_id"],
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "by": self.actor,
            "tenant": self.tenant,
            "at": self.at.isoformat(),
            "reason": self.reason,
            "new_ce_id": self.new_ce_id,
        }


def replay_message(letter: Letter) -> OutgoingMessage:
    """The letter as it goes back to its origin topic, under a new ``ce_id``.

    The outbox keeps headers as text, so a header value that is not UTF-8
    (never one Mainstay writes) goes back with replacement marks.
    """
    origin = letter.text.get(Header.ORIGIN_TOPIC)
    if not origin:
        raise RuleViolation(
            f"letter: the dead letter at {letter.where()} has no {Header.ORIGIN_TOPIC} header,"
            " so there is nowhere to replay it; purge it instead"
        )
    headers = {
        name: value
        for name, value in letter.text.items()
        if name not in _DROPPED and not name.startswith(_DROPPED_PREFIXES)
    }
    headers[Header.ID] = str(uuid.uuid4())
    if letter.ce_id:
        headers[Header.REPLAY_OF] = letter.ce_id
    headers[Header.REPLAY_FOR] = letter.group
    return OutgoingMessage(topic=origin, key=letter.key, value=letter.value or b"", headers=headers)


def _summary(letter: Letter, state: LetterState | None) -> dict[str, Any]:
    """What a listing shows of a letter."""
    headers = letter.text
    return {
        "topic": letter.topic,
        "partition": letter.partition,
        "offset": letter.offset,
        "key": letter.key.decode("utf-8", "replace") if letter.key is not None else None,
        "ce_id": headers.get(Header.ID),
        "ce_type": headers.get(Header.TYPE),
        "tenant": headers.get(Header.TENANT),
        "error": {
            "class": headers.get(Header.ERROR_CLASS),
            "type": headers.get(Header.ERROR_TYPE),
            "message": headers.get(Header.ERROR_MESSAGE),
        },
        "attempts": _int_or_none(headers.get(Header.ATTEMPTS)),
        "failed_at": headers.get(Header.FAILED_AT),
        "origin_topic": headers.get(Header.ORIGIN_TOPIC),
        "replay_of": headers.get(Header.REPLAY_OF),
        "status": state.status if state else "pending",
        "action": state.to_json() if state else None,
    }


def _detail(
    letter: Letter, state: LetterState | None, history: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """Everything about a letter: its summary, payload, headers and audit history."""
    headers = letter.text
    if letter.value is None:
        payload, encoding = None, "none"
    else:
        try:
            payload, encoding = json.loads(letter.value), "json"
        except ValueError:  # not UTF-8 or not JSON
            payload, encoding = base64.b64encode(letter.value).decode(), "base64"
    return {
        **_summary(letter, state),
        "group": letter.group,
        "dead_lettered_at": letter.timestamp.isoformat(),
        "origin": {
            "topic": headers.get(Header.ORIGIN_TOPIC),
            "partition": _int_or_none(headers.get(Header.ORIGIN_PARTITION)),
            "offset": _int_or_none(headers.get(Header.ORIGIN_OFFSET)),
        },
        "payload": payload,
        "payload_encoding": encoding,
        "headers": headers,
        "history": list(history),
    }


def _audit_entry(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": row["id"],
        "at": row["at"].isoformat(),
        "actor": row["actor"],
        "tenant": row["tenant"],
        "action": row["action"],
        "topic": row["topic"],
        "partition": row["partition"],
        "offset": row["offset"],
        "outcome": row["outcome"],
        "details": json.loads(row["details"]),
    }


def _parse_cursor(after: str | None) -> tuple[int, int] | None:
    """``"<partition>:<offset>"`` (the ``next`` of a listing) as a position."""
    if after is None:
        return None
    partition, _, offset = after.partition(":")
    if not (partition.isdigit() and offset.isdigit()):
        raise InvalidArgument(f"after: '{after}' must be '<partition>:<offset>', as in 'next'")
    return int(partition), int(offset)


class DeadLetters:
    """The DLQ topics of this mesh (those of ``broker``'s topic prefix) and their triage."""

    def __init__(
        self,
        database: Database,
        outbox: Outbox,
        broker: Broker,
        *,
        batch_size: int = 100,
    ) -> None:
        self._database = database
        self._outbox = outbox
        self._prefix = broker.topic_prefix
        self._broker = broker
        self._batch_size = batch_size

    # -- reading -----------------------------------------------------------------

    async def queues(self, *, by: Principal) -> list[dict[str, Any]]:
        """Every DLQ with its counts: ``total`` on the broker, ``pending``, ``replayed``,
        ``purged`` (the last three add up to the total)."""
        dlqs = await self._broker.dlqs()
        bounds = await self._broker.bounds({topic: range(n) for topic, n in dlqs.items()})
        acted = await self._acted_counts(bounds)
        queues = []
        for topic in sorted(dlqs):
            total = sum(end - first for first, end in bounds[topic].values())
            replayed = acted.get((topic, "replayed"), 0)
            purged = acted.get((topic, "purged"), 0)
            queues.append(
                {
                    "topic": topic,
                    "group": topic.removesuffix(DLQ_SUFFIX),
                    "partitions": dlqs[topic],
                    "total": total,
                    "pending": total - replayed - purged,
                    "replayed": replayed,
                    "purged": purged,
                }
            )
        await self._audit(by, "list", details={"dlqs": len(queues)})
        return queues

    async def letters(
        self,
        topic: str,
        *,
        status: StatusFilter = "pending",
        limit: int = 50,
        after: str | None = None,
        by: Principal,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Summaries of the letters of ``topic`` in (partition, offset) order, and the
        cursor of the next page (None on the last one)."""
        partitions = await self._partitions(topic)
        cursor = _parse_cursor(after)
        async with self._broker.reader() as reader:
            bounds = (await reader.bounds({topic: range(partitions)}))[topic]
            if status in {"replayed", "purged"}:
                found = await self._acted_letters(
                    reader, topic, status, bounds, limit=limit, cursor=cursor
                )
            else:
                found = await self._scan(
                    reader,
                    topic,
                    bounds,
                    limit=limit,
                    cursor=cursor,
                    pending_only=status == "pending",
                )
        await self._audit(
            by,
            "list",
            topic=topic,
            details={"status": status, "limit": limit, "after": after, "found": len(found)},
        )
        last = found[-1][0] if len(found) == limit else None
        return [_summary(*item) for item in found], (
            f"{last.partition}:{last.offset}" if last else None
        )

    async def letter(
        self, topic: str, partition: int, offset: int, *, by: Principal
    ) -> dict[str, Any]:
        """One letter in full, with what was done to it."""
        letter = await self._read(topic, partition, offset)
        state = await self._state(letter)
        history = await self._history(letter)
        await self._audit(by, "inspect", letter=letter)
        return _detail(letter, state, history)

    async def audit(
        self, *, limit: int = 100, topic: str | None = None, before: int | None = None
    ) -> list[dict[str, Any]]:
        """Audit entries, newest first (``before``: an entry id, for the next page)."""
        rows = await self._database.fetch(
            "SELECT * FROM dead_letter_audit WHERE ($1::text IS NULL OR topic = $1)"
            " AND ($2::bigint IS NULL OR id < $2) ORDER BY id DESC LIMIT $3",
            topic,
            before,
            limit,
        )
        return [_audit_entry(row) for row in rows]

    # -- acting ------------------------------------------------------------------

    async def replay(
        self, topic: str, partition: int, offset: int, *, by: Principal, reason: str = ""
    ) -> dict[str, Any]:
        """Send one pending letter back to its origin topic, for its group only."""
        letter = await self._read(topic, partition, offset)
        try:
            message = replay_message(letter)
            self._check_origin(letter, message, await self._broker.topics())
        except RuleViolation as exc:
            await self._refused(by, "replay", letter, exc)
            raise
        await self._settle_one(letter, "replayed", by=by, reason=reason, message=message)
        return {
            **self._where(letter),
            "status": "replayed",
            "ce_id": letter.ce_id,
            "new_ce_id": message.event_id,
            "origin_topic": message.topic,
            "replay_for": letter.group,
        }

    async def purge(
        self, topic: str, partition: int, offset: int, *, by: Principal, reason: str
    ) -> dict[str, Any]:
        """Mark one pending letter purged: hidden and never replayed (the broker keeps the
        record until the DLQ retention deletes it)."""
        letter = await self._read(topic, partition, offset)
        await self._settle_one(letter, "purged", by=by, reason=reason, message=None)
        return {**self._where(letter), "status": "purged", "ce_id": letter.ce_id, "reason": reason}

    async def replay_all(self, topic: str, *, by: Principal, reason: str = "") -> dict[str, Any]:
        """Replay every pending letter of ``topic``, a batch per transaction.

        Only letters already there when the call starts: a replay that fails
        again lands at the end of the DLQ and waits for the next call.
        Letters that cannot be replayed (no origin topic) stay pending and are
        counted as ``unreplayable``.
        """
        done, unreplayable = await self._settle_all(topic, "replayed", by=by, reason=reason)
        return {"topic": topic, "replayed": done, "unreplayable": unreplayable}

    async def purge_all(self, topic: str, *, by: Principal, reason: str) -> dict[str, Any]:
        """Purge every pending letter of ``topic``, a batch per transaction."""
        done, _ = await self._settle_all(topic, "purged", by=by, reason=reason)
        return {"topic": topic, "purged": done}

    async def _settle_one(
        self,
        letter: Letter,
        status: Acted,
        *,
        by: Principal,
        reason: str,
        message: OutgoingMessage | None,
    ) -> None:
        messages = {letter.position: message} if message else {}
        if await self._settle(letter.topic, [letter], status, messages, by=by, reason=reason):
            _log.info("%s %s by %s: %s", status, letter.where(), by.subject, reason or "-")
            return
        state = await self._state(letter)
        assert state is not None  # the row that won the race
        verb: Action = "replay" if status == "replayed" else "purge"
        error = AlreadyExists(
            f"letter: cannot {verb} the dead letter at {letter.where()}: it was already"
            f" {state.status} by {state.actor} at {state.at.isoformat()}"
            + (f" (new ce_id {state.new_ce_id})" if state.new_ce_id else "")
            + (f": {state.reason}" if state.reason else "")
        )
        await self._refused(by, verb, letter, error)
        raise error

    async def _settle_all(
        self, topic: str, status: Acted, *, by: Principal, reason: str
    ) -> tuple[int, int]:
        partitions = await self._partitions(topic)
        topics = await self._broker.topics() if status == "replayed" else {}
        done = unreplayable = 0
        cursor: tuple[int, int] | None = None
        async with self._broker.reader() as reader:
            # The ends are fixed now, so letters arriving meanwhile are left alone.
            bounds = (await reader.bounds({topic: range(partitions)}))[topic]
            while True:
                scanned = await self._scan(
                    reader, topic, bounds, limit=self._batch_size, cursor=cursor, pending_only=True
                )
                if not scanned:
                    break
                batch = [letter for letter, _ in scanned]
                cursor = batch[-1].position
                messages: dict[tuple[int, int], OutgoingMessage] = {}
                if status == "replayed":
                    for letter in batch:
                        try:
                            message = replay_message(letter)
                            self._check_origin(letter, message, topics)
                        except RuleViolation:
                            unreplayable += 1
                            continue
                        messages[letter.position] = message
                    batch = [letter for letter in batch if letter.position in messages]
                done += await self._settle(topic, batch, status, messages, by=by, reason=reason)
                if len(scanned) < self._batch_size:
                    break
        verb: Action = "replay" if status == "replayed" else "purge"
        await self._audit(
            by,
            verb,
            topic=topic,
            details={"all": True, status: done, "unreplayable": unreplayable, "reason": reason},
        )
        _log.info("%s %d letter(s) of %s by %s", status, done, topic, by.subject)
        return done, unreplayable

    async def _settle(
        self,
        topic: str,
        letters: Sequence[Letter],
        status: Acted,
        messages: Mapping[tuple[int, int], OutgoingMessage],
        *,
        by: Principal,
        reason: str,
    ) -> int:
        """Record ``letters`` as ``status`` with their audit rows and replays, in one
        transaction; returns how many were still pending (the others are left alone)."""
        if not letters:
            return 0
        new_ids = [
            messages[letter.position].event_id if letter.position in messages else None
            for letter in letters
        ]
        with map_asyncpg_errors():
            async with self._database.pool.acquire() as conn, conn.transaction():
                rows = await conn.fetch(
                    'INSERT INTO dead_letters (topic, partition, "offset", ce_id, status,'
                    " new_ce_id, reason, actor, tenant)"
                    " SELECT $1, l.partition, l.off, l.ce_id, $2, l.new_ce_id, $3, $4, $5"
                    " FROM unnest($6::integer[], $7::bigint[], $8::text[], $9::text[])"
                    " AS l(partition, off, ce_id, new_ce_id)"
                    ' ON CONFLICT (topic, partition, "offset") DO NOTHING'
                    ' RETURNING partition, "offset"',
                    topic,
                    status,
                    reason,
                    by.subject,
                    by.tenant,
                    [letter.partition for letter in letters],
                    [letter.offset for letter in letters],
                    [letter.ce_id for letter in letters],
                    new_ids,
                )
                claimed = {(row["partition"], row["offset"]) for row in rows}
                chosen = [letter for letter in letters if letter.position in claimed]
                await self._audit_letters(
                    conn,
                    by,
                    "replay" if status == "replayed" else "purge",
                    chosen,
                    [
                        {
                            "ce_id": letter.ce_id,
                            "reason": reason,
                            **(
                                {
                                    "new_ce_id": messages[letter.position].event_id,
                                    "origin_topic": messages[letter.position].topic,
                                }
                                if letter.position in messages
                                else {}
                            ),
                        }
                        for letter in chosen
                    ],
                )
                await self._outbox.add(
                    conn,
                    *(messages[one.position] for one in chosen if one.position in messages),
                )
        return len(chosen)

    # -- the broker --------------------------------------------------------------

    async def _partitions(self, topic: str) -> int:
        if not topic.endswith(DLQ_SUFFIX):
            raise InvalidArgument(
                f"topic: '{topic}' is not a dead-letter topic (their names end in '{DLQ_SUFFIX}')"
            )
        partitions = (await self._broker.dlqs()).get(topic)
        if partitions is None:
            raise NotFound(f"topic: no dead-letter topic '{topic}'")
        return partitions

    def _check_origin(
        self, letter: Letter, message: OutgoingMessage, topics: Mapping[str, int]
    ) -> None:
        if not message.topic.startswith(self._prefix) or message.topic not in topics:
            raise RuleViolation(
                f"letter: the dead letter at {letter.where()} came from '{message.topic}',"
                " which is not a topic of this mesh; purge it instead"
            )

    async def _read(self, topic: str, partition: int, offset: int) -> Letter:
        partitions = await self._partitions(topic)
        where = f"partition {partition} offset {offset} of '{topic}'"
        if not 0 <= partition < partitions:
            raise NotFound(f"letter: '{topic}' has no partition {partition} (it has {partitions})")
        async with self._broker.reader() as reader:
            first, end = (await reader.bounds({topic: [partition]}))[topic][partition]
            letter = await reader.one(topic, partition, offset) if first <= offset < end else None
        if letter is not None:
            return letter
        if offset < first:
            raise NotFound(
                f"letter: the dead letter at {where} is gone: the broker deleted it"
                " after the DLQ retention"
            )
        raise NotFound(f"letter: no dead letter at {where}")

    async def _scan(
        self,
        reader: BrokerReader,
        topic: str,
        bounds: Bounds,
        *,
        limit: int,
        cursor: tuple[int, int] | None,
        pending_only: bool,
    ) -> list[tuple[Letter, LetterState | None]]:
        """Up to ``limit`` letters after ``cursor``, read from the broker in order."""
        found: list[tuple[Letter, LetterState | None]] = []
        for partition, (first, end) in sorted(bounds.items()):
            start = first
            if cursor is not None:
                if partition < cursor[0]:
                    continue
                if partition == cursor[0]:
                    start = max(first, cursor[1] + 1)
            if start >= end:
                continue
            async with contextlib.aclosing(reader.chunks(topic, partition, start, end)) as chunks:
                async for chunk in chunks:
                    states = await self._states(topic, partition, chunk[0].offset, chunk[-1].offset)
                    for letter in chunk:
                        state = states.get(letter.offset)
                        if pending_only and state is not None:
                            continue
                        found.append((letter, state))
                        if len(found) == limit:
                            return found
        return found

    async def _acted_letters(
        self,
        reader: BrokerReader,
        topic: str,
        status: Acted,
        bounds: Bounds,
        *,
        limit: int,
        cursor: tuple[int, int] | None,
    ) -> list[tuple[Letter, LetterState | None]]:
        """Up to ``limit`` letters in ``status`` after ``cursor`` that the broker still has."""
        after = cursor or (-1, -1)
        rows = await self._database.fetch(
            'SELECT * FROM dead_letters WHERE topic = $1 AND status = $2 AND (partition, "offset")'
            ' > ($3, $4) AND "offset" >= ($5::bigint[])[partition + 1]'
            ' ORDER BY partition, "offset" LIMIT $6',
            topic,
            status,
            after[0],
            after[1],
            [bounds[p][0] for p in sorted(bounds)],
            limit,
        )
        found: list[tuple[Letter, LetterState | None]] = []
        for row in rows:
            letter = await reader.one(topic, row["partition"], row["offset"])
            if letter is not None:
                found.append((letter, LetterState.of(row)))
        return found

    # -- the database ------------------------------------------------------------

    async def _acted_counts(self, bounds: Mapping[str, Bounds]) -> dict[tuple[str, str], int]:
        """Replayed and purged letters per DLQ, of those the broker still has."""
        spans = [
            (topic, partition, first, end)
            for topic, partitions in bounds.items()
            for partition, (first, end) in partitions.items()
        ]
        rows = await self._database.fetch(
            "SELECT d.topic, d.status, count(*) AS n FROM dead_letters d JOIN"
            " unnest($1::text[], $2::integer[], $3::bigint[], $4::bigint[])"
            " AS b(topic, partition, first, stop) ON d.topic = b.topic"
            ' AND d.partition = b.partition AND d."offset" >= b.first AND d."offset" < b.stop'
            " GROUP BY d.topic, d.status",
            [s[0] for s in spans],
            [s[1] for s in spans],
            [s[2] for s in spans],
            [s[3] for s in spans],
        )
        return {(row["topic"], row["status"]): row["n"] for row in rows}

    async def _states(
        self, topic: str, partition: int, first: int, last: int
    ) -> dict[int, LetterState]:
        rows = await self._database.fetch(
            'SELECT * FROM dead_letters WHERE topic = $1 AND partition = $2 AND "offset"'
            " BETWEEN $3 AND $4",
            topic,
            partition,
            first,
            last,
        )
        return {row["offset"]: LetterState.of(row) for row in rows}

    async def _state(self, letter: Letter) -> LetterState | None:
        states = await self._states(letter.topic, letter.partition, letter.offset, letter.offset)
        return states.get(letter.offset)

    async def _history(self, letter: Letter) -> list[dict[str, Any]]:
        rows = await self._database.fetch(
            'SELECT * FROM dead_letter_audit WHERE topic = $1 AND partition = $2 AND "offset" = $3'
            " ORDER BY id",
            letter.topic,
            letter.partition,
            letter.offset,
        )
        return [_audit_entry(row) for row in rows]

    async def _audit(
        self,
        by: Principal,
        action: Action,
        *,
        topic: str | None = None,
        letter: Letter | None = None,
        outcome: str = "ok",
        details: Mapping[str, Any] | None = None,
    ) -> None:
        await self._database.execute(
            "INSERT INTO dead_letter_audit (actor, tenant, action, topic, partition,"
            ' "offset", outcome, details) VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb)',
            by.subject,
            by.tenant,
            action,
            letter.topic if letter else topic,
            letter.partition if letter else None,
            letter.offset if letter else None,
            outcome,
            json.dumps(dict(details or {})),
        )

    async def _refused(self, by: Principal, action: Action, letter: Letter, exc: Exception) -> None:
        await self._audit(by, action, letter=letter, outcome="refused", details={"error": str(exc)})

    @staticmethod
    async def _audit_letters(
        conn: Connection,
        by: Principal,
        action: Action,
        letters: Sequence[Letter],
        details: Sequence[Mapping[str, Any]],
    ) -> None:
        if not letters:
            return
        await conn.execute(
            "INSERT INTO dead_letter_audit (actor, tenant, action, topic, partition,"
            " \"offset\", outcome, details) SELECT $1, $2, $3, $4, a.partition, a.off, 'ok',"
            " a.details FROM unnest($5::integer[], $6::bigint[], $7::jsonb[])"
            " AS a(partition, off, details)",
            by.subject,
            by.tenant,
            action,
            letters[0].topic,
            [letter.partition for letter in letters],
            [letter.offset for letter in letters],
            [json.dumps(dict(d)) for d in details],
        )

    @staticmethod
    def _where(letter: Letter) -> dict[str, Any]:
        return {"topic": letter.topic, "partition": letter.partition, "offset": letter.offset}


def _int_or_none(value: str | None) -> int | None:
    return int(value) if value is not None and value.isdigit() else None
