"""Agent memory over gRPC: remember, recall, look up, trace and forget what agents know.

:class:`MemoryClient` talks to the memory service (``mainstay.memory.v1.MemoryService``)
as the caller's token allows: ``memory:write:<agent>`` to store an agent's memories,
``memory:read:<agent>`` to read them (``memory:read:*`` / ``memory:write:*`` for every
agent of the tenant, and for tenant-wide records, which name no agent). Every record
belongs to the token's tenant. Results are plain values (:class:`Memory`,
:class:`Recalled`, :class:`RememberResult`), and every failure is a
:class:`~mainstay_client.ClientError` whose message names the problem.

Example::

    import asyncio
    from mainstay_client import MemoryClient

    async def main() -> None:
        async with MemoryClient() as memory:  # MAINSTAY_TOKEN, MAINSTAY_MEMORY_TARGET
            await memory.remember(
                "The user lives in Paris", agent="assistant", subject="user.home_city"
            )
            await memory.remember("Prefers window seats", agent="assistant", kind="preference")
            for hit in await memory.recall("where does the user live?", agent="assistant"):
                print(f"{hit.score:.2f} {hit.memory.kind} {hit.memory.content}")

    asyncio.run(main())

The same, blocking, for scripts::

    from mainstay_client import MemoryClientSync

    with MemoryClientSync() as memory:
        memory.remember("The user moved to Berlin", agent="assistant", subject="user.home_city")
        for version in memory.history(agent="assistant", subject="user.home_city"):
            print(version.valid_from, version.content, "(current)" if version.current else "")
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
from dataclasses import dataclass, field
from datetime import UTC
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast, get_args

import grpc
import grpc.aio
from google.protobuf.timestamp_pb2 import Timestamp

from mainstay.memory.v1 import memory_pb2 as pb
from mainstay.memory.v1 import memory_pb2_grpc
from mainstay_client._settings import Caller, ClientError, ClientSettings, tenant_of
from mainstay_client._sync import LoopThread
from mainstay_common.grpc import create_channel

if TYPE_CHECKING:
    from collections.abc import Coroutine, Iterable, Iterator, Mapping, Sequence
    from datetime import datetime

__all__ = [
    "Kind",
    "Memory",
    "MemoryClient",
    "MemoryClientSync",
    "Outcome",
    "Recalled",
    "RememberResult",
    "ScoreParts",
]

Kind = Literal["fact", "preference", "decision", "episode", "observation"]
"""What a memory is (the proto's ``Kind`` without its ``KIND_`` prefix, lower-case)."""

Outcome = Literal["added", "merged", "superseded_previous", "duplicate"]
"""What curation did with a write: stored it, merged it into a near duplicate,
stored it replacing the current record of its subject, or found it already stored."""

_KIND_NUMBERS: dict[str, pb.Kind.ValueType] = {
    kind: pb.Kind.Value(f"KIND_{kind.upper()}") for kind in get_args(Kind)
}
_KIND_NAMES: dict[pb.Kind.ValueType, str] = {number: kind for kind, number in _KIND_NUMBERS.items()}
_OUTCOME_NAMES: dict[int, str] = {
    pb.Outcome.Value(f"OUTCOME_{outcome.upper()}"): outcome for outcome in get_args(Outcome)
}

# What gRPC accepts in a metadata value (a JWT is a subset). grpc.aio never finishes
# a call, not even at its deadline, whose metadata holds anything else.
_HEADER_VALUE = re.compile(r"[\x20-\x7e]*")
# The gRPC deadline ends a call; this backstop ends one gRPC itself failed to finish.
_BACKSTOP_GRACE_S = 1.0
# The most hits one recall returns (RecallRequest.top_k).
_MAX_LIMIT = 100

R = TypeVar("R")


# -- values ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Memory:
    """One version of one memory record, as the service stores it.

    ``tenant``, ``agent``, ``user`` and ``session`` are its scope (empty: not
    narrowed to one). ``valid_to`` is None while the record is current;
    ``superseded_by`` names the record that replaced it. A record forgotten with
    ``hard=True`` has empty ``content`` and ``metadata``. ``task_id`` and ``step``
    say where it came from, when a task stored it. Times are timezone-aware (UTC).
    """

    id: str
    kind: Kind
    content: str
    subject: str
    metadata: Mapping[str, str] = field(hash=False)
    importance: float
    tenant: str
    agent: str
    user: str
    session: str
    task_id: str
    step: int
    valid_from: datetime
    valid_to: datetime | None
    superseded_by: str
    created_at: datetime
    expires_at: datetime | None
    merged_count: int
    forgotten: bool

    @property
    def current(self) -> bool:
        """Neither superseded, expired nor forgotten."""
        return self.valid_to is None and not self.forgotten


@dataclass(frozen=True, slots=True)
class ScoreParts:
    """What a recall score is made of; the score is their weighted sum."""

    semantic: float
    keyword: float
    recency: float
    importance: float


@dataclass(frozen=True, slots=True)
class Recalled:
    """A memory that matched a recall, with its ``score`` (higher is better)."""

    memory: Memory
    score: float
    parts: ScoreParts


@dataclass(frozen=True, slots=True)
class RememberResult:
    """What a write did: the record that holds the memory now, and how it got there.

    For ``"merged"`` and ``"duplicate"`` ``memory`` is the existing record the write
    went into; for ``"superseded_previous"`` ``superseded_ids`` are the records it
    replaced.
    """

    memory: Memory
    outcome: Outcome
    superseded_ids: tuple[str, ...]


# -- the async client -------------------------------------------------------------------


class MemoryClient(Caller):
    """The memory service, asynchronously; an async context manager around one channel.

    ``settings`` default to :class:`~mainstay_client.ClientSettings` read from the
    environment; ``target`` (``host:port``) overrides their ``memory_target`` and
    ``token`` their token. The token is read again for every call, so a rotated
    ``MAINSTAY_TOKEN_FILE`` is picked up. Every call has a deadline of ``timeout_s``.

    Use it inside one event loop (the channel binds to the loop that opens it). The
    channel opens on entering the ``async with`` block, or on the first call, and
    closes on leaving it (or :meth:`aclose`).
    """

    def __init__(
        self,
        settings: ClientSettings | None = None,
        *,
        target: str | None = None,
        token: str | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        if not timeout_s > 0:
            raise ClientError(f"timeout_s must be positive, not {timeout_s}")
        super().__init__(settings, token)
        self.target = target or self.settings.memory_target
        self.timeout_s = timeout_s
        self._channel: grpc.aio.Channel | None = None
        self._stub: Any = None

    def __repr__(self) -> str:
        return f"MemoryClient(target={self.target!r})"

    async def __aenter__(self) -> MemoryClient:
        self._credentials()  # no token, or an unusable one: fail before anything is sent
        self._open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the channel; a later call opens a new one."""
        channel, self._channel, self._stub = self._channel, None, None
        if channel is not None:
            await channel.close()

    # -- writes ---------------------------------------------------------------------

    async def remember(
        self,
        content: str,
        *,
        agent: str,
        kind: Kind = "fact",
        subject: str = "",
        metadata: Mapping[str, str] | None = None,
        importance: float | None = None,
        user: str = "",
        session: str = "",
        idempotency_key: str = "",
        ttl_s: float | None = None,
        valid_from: datetime | None = None,
    ) -> RememberResult:
        """Store ``content`` as a memory of ``agent`` (``""``: of the whole tenant).

        The service curates every write: with a ``subject`` (a stable key such as
        ``user.home_city``) the new record supersedes the subject's current one,
        which stays in :meth:`history`; near-duplicate content in the same scope is
        merged instead of stored twice. ``importance`` is in (0, 1] (default 0.5).
        Repeating a call with the same ``idempotency_key`` returns the first result.
        The record stops being current after ``ttl_s`` seconds; ``valid_from``
        (timezone-aware, default now) dates a fact learnt earlier.
        """
        if importance is not None and not 0 < importance <= 1:
            raise ClientError(f"importance must be greater than 0 and at most 1, not {importance}")
        if ttl_s is not None and not ttl_s > 0:
            raise ClientError(f"ttl_s must be positive, not {ttl_s}")
        token, tenant = self._credentials()
        with _building("remember"):
            request = pb.RememberRequest(
                scope=pb.Scope(tenant=tenant, agent_id=agent, user_id=user, session_id=session),
                kind=_kind_number(kind),
                content=content,
                subject=subject,
                metadata=dict(metadata or {}),
                importance=importance or 0.0,
                idempotency_key=idempotency_key,
                ttl_seconds=math.ceil(ttl_s) if ttl_s is not None else 0,
            )
            if valid_from is not None:
                request.valid_from.CopyFrom(_timestamp(valid_from, "valid_from"))
        reply: pb.RememberResponse = await self._call("Remember", request, token)
        return RememberResult(
            memory=_memory(reply.record),
            outcome=cast(Outcome, _OUTCOME_NAMES.get(reply.outcome, "unspecified")),
            superseded_ids=tuple(reply.superseded_ids),
        )

    async def forget(
        self,
        *,
        ids: Sequence[str] = (),
        agent: str | None = None,
        subject: str = "",
        kinds: Iterable[Kind] = (),
        user: str = "",
        session: str = "",
        hard: bool = False,
    ) -> int:
        """Forget the records ``ids``, or every record of ``agent`` (narrowed by
        ``subject``, ``kinds``, ``user`` and ``session``); how many changed.

        ``agent=""`` means every agent of the tenant (which takes ``memory:write:*``).
        Forgotten records no longer show in :meth:`recall`; ``hard`` also erases
        their content, metadata and vectors (for deletion requests). Forgetting an
        already forgotten record again changes nothing and is not counted.
        """
        id_list = [ids] if isinstance(ids, str) else list(ids)
        kind_list = list(kinds)
        narrowed = agent is not None or subject or kind_list or user or session
        if id_list and narrowed:
            raise ClientError(
                "forget takes either ids, or an agent (with optional subject, kinds, user and"
                " session), not both"
            )
        if not id_list and agent is None:
            raise ClientError('forget needs ids, or an agent ("" for every agent)')
        token, tenant = self._credentials()
        with _building("forget"):
            if id_list:
                request = pb.ForgetRequest(ids=id_list, hard=hard)
            else:
                request = pb.ForgetRequest(
                    scope=pb.Scope(
                        tenant=tenant, agent_id=agent or "", user_id=user, session_id=session
                    ),
                    subject=subject,
                    kinds=[_kind_number(kind) for kind in kind_list],
                    hard=hard,
                )
        reply: pb.ForgetResponse = await self._call("Forget", request, token)
        return reply.count

    # -- reads ----------------------------------------------------------------------

    async def recall(
        self,
        query: str,
        *,
        agent: str,
        limit: int = 10,
        kinds: Iterable[Kind] = (),
        as_of: datetime | None = None,
        include_superseded: bool = False,
        min_score: float = 0.0,
        user: str = "",
        session: str = "",
    ) -> list[Recalled]:
        """The at most ``limit`` (1 to 100) memories of ``agent`` that best match ``query``,
        best first.

        ``agent=""`` searches every agent of the tenant (which takes
        ``memory:read:*``); ``user`` and ``session`` narrow the search to one user's
        or one conversation's memories, ``kinds`` to some kinds. The search is
        hybrid (meaning and keywords, weighed by recency and importance) over the
        current records, or over what was current at ``as_of`` (timezone-aware);
        ``include_superseded`` also searches replaced records.
        """
        if not 1 <= limit <= _MAX_LIMIT:
            raise ClientError(f"limit must be between 1 and {_MAX_LIMIT}, not {limit}")
        token, tenant = self._credentials()
        with _building("recall"):
            request = pb.RecallRequest(
                scope=pb.Scope(tenant=tenant, agent_id=agent, user_id=user, session_id=session),
                query=query,
                kinds=[_kind_number(kind) for kind in kinds],
                top_k=limit,
                include_superseded=include_superseded,
                min_score=min_score,
            )
            if as_of is not None:
                request.as_of.CopyFrom(_timestamp(as_of, "as_of"))
        reply: pb.RecallResponse = await self._call("Recall", request, token)
        return [
            Recalled(
                memory=_memory(hit.record),
                score=hit.score,
                parts=ScoreParts(
                    semantic=hit.parts.semantic,
                    keyword=hit.parts.keyword,
                    recency=hit.parts.recency,
                    importance=hit.parts.importance,
                ),
            )
            for hit in reply.hits
        ]

    async def get(self, memory_id: str) -> Memory:
        """The record ``memory_id`` (forgotten or not); NOT_FOUND when the tenant has none."""
        if not memory_id:
            raise ClientError("get needs a memory id")
        token, _ = self._credentials()
        with _building("get"):
            request = pb.GetRequest(id=memory_id)
        reply: pb.GetResponse = await self._call("Get", request, token)
        return _memory(reply.record)

    async def history(
        self,
        *,
        memory_id: str = "",
        agent: str = "",
        subject: str = "",
        user: str = "",
        session: str = "",
    ) -> list[Memory]:
        """Every version of one fact, oldest first: the one ``memory_id`` is a version of,
        or the one ``subject`` names in the scope of ``agent``, ``user`` and ``session``.

        A record without a subject has no other versions: its history is itself.
        """
        if memory_id and subject:
            raise ClientError("history takes either memory_id, or agent and subject, not both")
        if not memory_id and not subject:
            raise ClientError("history needs memory_id, or agent and subject")
        token, tenant = self._credentials()
        with _building("history"):
            if memory_id:
                request = pb.HistoryRequest(id=memory_id)
            else:
                request = pb.HistoryRequest(
                    scope=pb.Scope(tenant=tenant, agent_id=agent, user_id=user, session_id=session),
                    subject=subject,
                )
        reply: pb.HistoryResponse = await self._call("History", request, token)
        return [_memory(version) for version in reply.versions]

    # -- plumbing -------------------------------------------------------------------

    def _credentials(self) -> tuple[str, str]:
        """The token and its tenant, refused when gRPC could not send the token."""
        token = self.token
        if not _HEADER_VALUE.fullmatch(token):
            raise ClientError(
                "the token is not printable ASCII (a JWT is): gRPC cannot send it in a header"
            )
        return token, tenant_of(token)

    def _open(self) -> Any:
        if self._stub is None:
            self._channel = create_channel(self.target, default_timeout=self.timeout_s)
            self._stub = memory_pb2_grpc.MemoryServiceStub(self._channel)
        return self._stub

    async def _call(self, method: str, request: Any, token: str) -> Any:
        rpc = getattr(self._open(), method)
        try:
            async with asyncio.timeout(self.timeout_s + _BACKSTOP_GRACE_S):
                return await rpc(
                    request,
                    metadata=(("authorization", f"Bearer {token}"),),
                    timeout=self.timeout_s,
                )
        except grpc.aio.AioRpcError as exc:
            raise self._refusal(method, exc.code(), exc.details()) from exc
        # A closed channel and the like: no status.
        except (grpc.RpcError, grpc.aio.BaseError) as exc:
            raise ClientError(
                f"memory {method} failed: {type(exc).__name__}: {exc or 'no details'}"
            ) from exc
        except TimeoutError as exc:
            raise self._refusal(method, grpc.StatusCode.DEADLINE_EXCEEDED, None) from exc

    def _refusal(self, method: str, code: grpc.StatusCode, details: str | None) -> ClientError:
        status = code.name
        if code is grpc.StatusCode.UNAVAILABLE:
            return ClientError(
                f"memory service at {self.target} is unreachable"
                f" ({status}: {details or 'no details'})"
            )
        if code is grpc.StatusCode.DEADLINE_EXCEEDED:
            return ClientError(
                f"memory service at {self.target} did not answer {method} within"
                f" {self.timeout_s:g} s ({status})"
            )
        return ClientError(f"memory {method} failed: {status}: {details or 'no details'}")


# -- the blocking client -----------------------------------------------------------------


class MemoryClientSync:
    """:class:`MemoryClient`, blocking; a context manager.

    The async client runs on a private event loop in a background thread, which
    :meth:`close` (or leaving the ``with`` block) stops. Takes the same arguments
    as :class:`MemoryClient`; its methods take the same arguments and return the
    same values. Safe to call from one thread at a time.
    """

    def __init__(
        self,
        settings: ClientSettings | None = None,
        *,
        target: str | None = None,
        token: str | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self._client = MemoryClient(settings, target=target, token=token, timeout_s=timeout_s)
        self._loop: LoopThread | None = LoopThread("mainstay-memory-client")

    def __repr__(self) -> str:
        return f"MemoryClientSync(target={self.target!r})"

    @property
    def target(self) -> str:
        return self._client.target

    @property
    def tenant(self) -> str:
        return self._client.tenant

    def __enter__(self) -> MemoryClientSync:
        try:
            self._run(self._client.__aenter__())
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the channel and stop the loop thread; the client cannot be used after."""
        loop, self._loop = self._loop, None
        if loop is None:
            return
        try:
            loop.run(self._client.aclose())
        finally:
            loop.close()

    def remember(
        self,
        content: str,
        *,
        agent: str,
        kind: Kind = "fact",
        subject: str = "",
        metadata: Mapping[str, str] | None = None,
        importance: float | None = None,
        user: str = "",
        session: str = "",
        idempotency_key: str = "",
        ttl_s: float | None = None,
        valid_from: datetime | None = None,
    ) -> RememberResult:
        """See :meth:`MemoryClient.remember`."""
        return self._run(
            self._client.remember(
                content,
                agent=agent,
                kind=kind,
                subject=subject,
                metadata=metadata,
                importance=importance,
                user=user,
                session=session,
                idempotency_key=idempotency_key,
                ttl_s=ttl_s,
                valid_from=valid_from,
            )
        )

    def forget(
        self,
        *,
        ids: Sequence[str] = (),
        agent: str | None = None,
        subject: str = "",
        kinds: Iterable[Kind] = (),
        user: str = "",
        session: str = "",
        hard: bool = False,
    ) -> int:
        """See :meth:`MemoryClient.forget`."""
        return self._run(
            self._client.forget(
                ids=ids,
                agent=agent,
                subject=subject,
                kinds=kinds,
                user=user,
                session=session,
                hard=hard,
            )
        )

    def recall(
        self,
        query: str,
        *,
        agent: str,
        limit: int = 10,
        kinds: Iterable[Kind] = (),
        as_of: datetime | None = None,
        include_superseded: bool = False,
        min_score: float = 0.0,
        user: str = "",
        session: str = "",
    ) -> list[Recalled]:
        """See :meth:`MemoryClient.recall`."""
        return self._run(
            self._client.recall(
                query,
                agent=agent,
                limit=limit,
                kinds=kinds,
                as_of=as_of,
                include_superseded=include_superseded,
                min_score=min_score,
                user=user,
                session=session,
            )
        )

    def get(self, memory_id: str) -> Memory:
        """See :meth:`MemoryClient.get`."""
        return self._run(self._client.get(memory_id))

    def history(
        self,
        *,
        memory_id: str = "",
        agent: str = "",
        subject: str = "",
        user: str = "",
        session: str = "",
    ) -> list[Memory]:
        """See :meth:`MemoryClient.history`."""
        return self._run(
            self._client.history(
                memory_id=memory_id, agent=agent, subject=subject, user=user, session=session
            )
        )

    def _run(self, coroutine: Coroutine[Any, Any, R]) -> R:
        if self._loop is None:
            coroutine.close()
            raise ClientError("the memory client is closed")
        return self._loop.run(coroutine)


# -- conversions -----------------------------------------------------------------------


def _kind_number(kind: str) -> pb.Kind.ValueType:
    try:
        return _KIND_NUMBERS[kind]
    except KeyError:
        raise ClientError(
            f"unknown memory kind {kind!r}: one of {', '.join(_KIND_NUMBERS)}"
        ) from None


def _kind_name(number: pb.Kind.ValueType) -> Kind:
    # A kind newer than this client: its proto name, lower-case without the prefix.
    name = _KIND_NAMES.get(number)
    if name is None:
        name = pb.Kind.Name(number) if number in pb.Kind.values() else str(number)
        name = name.removeprefix("KIND_").lower()
    return cast(Kind, name)


def _timestamp(moment: datetime, name: str) -> Timestamp:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ClientError(f"{name} must be timezone-aware, not {moment.isoformat()}")
    stamp = Timestamp()
    stamp.FromDatetime(moment.astimezone(UTC))
    return stamp


def _optional_time(stamp: Timestamp, *, present: bool) -> datetime | None:
    return stamp.ToDatetime(tzinfo=UTC) if present else None


def _memory(record: pb.MemoryRecord) -> Memory:
    return Memory(
        id=record.id,
        kind=_kind_name(record.kind),
        content=record.content,
        subject=record.subject,
        metadata=dict(record.metadata),
        importance=record.importance,
        tenant=record.scope.tenant,
        agent=record.scope.agent_id,
        user=record.scope.user_id,
        session=record.scope.session_id,
        task_id=record.source.task_id,
        step=record.source.step,
        valid_from=record.valid_from.ToDatetime(tzinfo=UTC),
        valid_to=_optional_time(record.valid_to, present=record.HasField("valid_to")),
        superseded_by=record.superseded_by,
        created_at=record.created_at.ToDatetime(tzinfo=UTC),
        expires_at=_optional_time(record.expires_at, present=record.HasField("expires_at")),
        merged_count=record.merged_count,
        forgotten=record.forgotten,
    )


@contextlib.contextmanager
def _building(what: str) -> Iterator[None]:
    """Turn what protobuf cannot encode (a lone surrogate, a value of the wrong type)
    into a ClientError before anything is sent."""
    try:
        yield
    except (ValueError, TypeError) as exc:
        raise ClientError(f"memory {what} request not sent: {exc}") from exc
