"""What a task remembers when it starts: recall from the memory service over gRPC.

Recall is best-effort. Before its first step a task asks the memory service for
what its agent knows about the input; when memory cannot answer (down, slow,
refusing the task's token, rejecting the request) :meth:`MemoryClient.recall`
raises :class:`MemoryUnavailable` and the task goes on without memories,
marked degraded with the reason. An agent that answers a little worse beats
one that does not answer, so no memory failure ever fails a task.

Writes do not go through this client: the built-in ``remember`` tool publishes
``memory.cmd.remember.v1`` over Kafka, exactly-once through the call's
idempotency key, so a write survives the memory service being down and a
redelivered command never stores a fact twice.
"""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING

import grpc
import grpc.aio
from opentelemetry import trace

from mainstay.memory.v1 import memory_pb2 as pb
from mainstay.memory.v1 import memory_pb2_grpc
from mainstay_common.grpc import create_channel

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

__all__ = ["MemoryClient", "MemoryUnavailable"]

_tracer = trace.get_tracer("mainstay_execution.memory")

# What gRPC accepts in a metadata value (a JWT is a subset).
_HEADER_VALUE = re.compile(r"[\x20-\x7e]*")
_BACKSTOP_GRACE_S = 1.0


class MemoryUnavailable(Exception):
    """Memory could not answer; the task continues without it.

    ``status`` is the gRPC status name (``UNAVAILABLE``, ``PERMISSION_DENIED``,
    ...) when the call ended with one, None when gRPC failed before a status.
    """

    def __init__(self, reason: str, *, status: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class MemoryClient:
    """Recalls memories for tasks over one channel to ``target`` (``host:port``).

    Construct it inside the running event loop (the channel binds to it) and
    ``await aclose()`` when done. Every call has a deadline of ``timeout_s``.
    """

    def __init__(
        self, target: str, *, timeout_s: float, tracer_provider: TracerProvider | None = None
    ) -> None:
        self._target = target
        self._timeout_s = timeout_s
        self._channel = create_channel(
            target, default_timeout=timeout_s, tracer_provider=tracer_provider
        )
        self._stub = memory_pb2_grpc.MemoryServiceStub(self._channel)

    async def aclose(self) -> None:
        await self._channel.close()

    async def recall(
        self, *, token: str, tenant: str, agent: str, query: str, limit: int, task_id: str
    ) -> list[str]:
        """The contents of the ``limit`` memories of ``agent`` best matching ``query``, best first.

        ``token`` is the task's own bearer token, so memory applies the
        submitter's scopes, not the execution service's. Raises
        :class:`MemoryUnavailable` on any failure; ``limit`` 0 asks for nothing.
        """
        if limit <= 0:
            return []
        # grpc.aio never finishes a call (not even at its deadline) whose metadata
        # holds an illegal value, and the token comes from whoever submitted the task.
        if not _HEADER_VALUE.fullmatch(token):
            raise MemoryUnavailable("memory request not sent: the token is not printable ASCII")
        try:
            request = pb.RecallRequest(
                scope=pb.Scope(tenant=tenant, agent_id=agent), query=query, top_k=limit
            )
        except ValueError as exc:  # text protobuf cannot encode, such as a lone surrogate
            raise MemoryUnavailable(f"memory request not sent: {exc}") from exc
        with _tracer.start_as_current_span(
            "memory recall", attributes={"mainstay.task_id": task_id}
        ):
            try:
                # The gRPC deadline ends the call; this backstop ends a call gRPC itself
                # failed to finish, so a task never waits on memory for longer.
                async with asyncio.timeout(self._timeout_s + _BACKSTOP_GRACE_S):
                    reply = await self._stub.Recall(
                        request,
                        metadata=(("authorization", f"Bearer {token}"),),
                        timeout=self._timeout_s,
                    )
            except grpc.aio.AioRpcError as exc:
                status = exc.code().name
                raise MemoryUnavailable(
                    f"memory {status}: {exc.details() or 'no details'}", status=status
                ) from exc
            # A closed channel and the like: no status.
            except (grpc.RpcError, grpc.aio.BaseError) as exc:
                raise MemoryUnavailable(f"memory call failed: {type(exc).__name__}: {exc}") from exc
            except TimeoutError as exc:
                raise MemoryUnavailable(
                    f"memory DEADLINE_EXCEEDED: no answer within {self._timeout_s} s",
                    status="DEADLINE_EXCEEDED",
                ) from exc
        return [hit.record.content for hit in reply.hits]
