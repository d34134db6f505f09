"""The gateway's use-cases: invoke a tool, and manage the registry and the vault.

Every call, whichever door it came through (HTTP, Kafka, MCP), passes the same
checks in the same order and ends the same way:

1. authenticate the principal and check the tool's scope;
2. validate the arguments against the input schema (``INVALID_ARGUMENTS``
   lists every problem; an unknown name gets ``UNKNOWN_TOOL`` and the closest
   names);
3. idempotency: a key already answered is replayed, without touching limits
   or the tool;
4. rate limits (per agent x tool, and for the tool across agents; shared by
   every instance through PostgreSQL);
5. the tool's circuit breaker and any Retry-After cool-down;
6. the call itself, with the tool's timeout (shortened by the call's deadline);
7. classification, then the output schema.

The result, its audit row, the stored copy for replays and the events
(``tools.evt.tool-call.v1``, usage for the ledger) commit in one transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from mainstay_common.errors import InvalidArgument, NotFound, RetryableError
from mainstay_contracts.ledger import RECORD_USAGE, RecordUsageCommand
from mainstay_contracts.tools import TOOL_CALLS, CallProblem, ToolCallEvent, ToolEvent, ToolSpec
from mainstay_tools_gateway.domain.model import (
    FINAL_OUTCOMES,
    RETRYABLE_OUTCOMES,
    CallContext,
    ToolFailure,
)
from mainstay_tools_gateway.domain.redaction import Redactor, argument_digest
from mainstay_tools_gateway.domain.schemas import SchemaCheck, closest_names, schema_problem

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping

    from mainstay_common.auth import Principal
    from mainstay_common.bus import Bus, Event, OutgoingMessage
    from mainstay_contracts.tools import CallOutcome, ToolKind
    from mainstay_tools_gateway.domain.breaker import BreakerState, CircuitBreakers
    from mainstay_tools_gateway.domain.model import CallRequest, Invoker
    from mainstay_tools_gateway.store.calls import CallStore
    from mainstay_tools_gateway.store.ratelimits import RateLimiter
    from mainstay_tools_gateway.store.registry import RegistryStore
    from mainstay_tools_gateway.store.vault import Vault

__all__ = ["ADMIN_SCOPE", "AUDIT_SCOPE", "CallObserver", "ToolsGateway"]

_log = logging.getLogger("mainstay.tools")

ADMIN_SCOPE = "tools:admin"
"""Register and remove tools, manage credentials, import MCP servers."""
AUDIT_SCOPE = "tools:audit"
"""Read the audit trail of the caller's tenant."""

_MAX_WRITES_BEHIND = 256
_WRITE_BEHIND_PATIENCE_S = 60.0
_MAX_UNSURE_CLAIMS = 10_000
"""Claims with a lost answer remembered (the oldest are forgotten; their lease frees them)."""
_SYNCHRONOUS = frozenset({"http", "mcp"})
"""Doors whose caller gets the result in the answer: their events may leave with the
outbox relay's next pass instead of waking it for every call (the relay's work per
pass would otherwise be paid by every synchronous call)."""


@dataclass(frozen=True)
class CallObserver:
    """Hooks for metrics; the service works without them."""

    call_finished: Callable[[str, str, float], None] | None = None
    breaker_changed: Callable[[str, BreakerState], None] | None = None


@dataclass
class _Call:
    """One call in flight: what came in, and what the steps learned so far."""

    request: CallRequest
    principal: Principal | None
    tool: ToolSpec | None
    digest: str
    call_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    started: float = field(default_factory=time.perf_counter)
    redactor: Redactor = field(default_factory=Redactor)
    claimed: bool = False


class _Outcome(Exception):
    """Ends a call early with a classified result (internal control flow)."""

    def __init__(
        self,
        outcome: CallOutcome,
        message: str,
        *,
        problems: list[CallProblem] | None = None,
        suggestions: list[str] | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.outcome: CallOutcome = outcome
        self.message = message
        self.problems = problems or []
        self.suggestions = suggestions or []
        self.retry_after_s = retry_after_s


class ToolsGateway:
    def __init__(
        self,
        *,
        registry: RegistryStore,
        vault: Vault,
        limiter: RateLimiter,
        calls: CallStore,
        breakers: CircuitBreakers,
        invokers: Mapping[ToolKind, Invoker],
        bus: Bus,
        max_output_bytes: int,
        claim_lease_s: float,
        builtin_names: tuple[str, ...] = (),
        mcp_stdio_enabled: bool = False,
        observer: CallObserver | None = None,
    ) -> None:
        self._builtin_names = builtin_names
        self._writes_behind = asyncio.Semaphore(_MAX_WRITES_BEHIND)
        self._pending_writes: set[asyncio.Task[None]] = set()
        self._mcp_stdio_enabled = mcp_stdio_enabled
        self.registry = registry
        self.vault = vault
        self._limiter = limiter
        self.calls = calls
        self.breakers = breakers
        self._invokers = dict(invokers)
        self._bus = bus
        self._max_output_bytes = max_output_bytes
        self._claim_lease_s = claim_lease_s
        # (tenant, key) -> the call id of a claim whose answer was lost (see _claim)
        self._unsure_claims: dict[tuple[str, str], str] = {}
        self._observer = observer or CallObserver()
        # tool name -> (the definition compiled, its input and output checks)
        self._checks: dict[str, tuple[ToolSpec, tuple[SchemaCheck, SchemaCheck | None]]] = {}

    # -- calling -------------------------------------------------------------------

    async def invoke(
        self,
        request: CallRequest,
        principal: Principal | None,
        *,
        channel: str,
        auth_problem: str = "",
        caused_by: Event[Any] | None = None,
    ) -> ToolCallEvent:
        """Run one call through every check; always returns a classified result."""
        call = _Call(
            request=request,
            principal=principal,
            tool=self.registry.get(request.tool),
            digest=argument_digest(request.arguments),
        )
        try:
            principal, tool, out_check = self._admit(call, auth_problem)
            if request.idempotency_key:
                stored = await self._claim(call, principal, tool)
                if stored is not None:
                    return await self._replay(stored, call, channel=channel, caused_by=caused_by)
            budget_s = self._budget(request, tool)
            wait = await self._limiter.take(
                tool, tenant=principal.tenant, subject=principal.subject
            )
            if wait > 0:
                raise _Outcome(
                    "RATE_LIMITED",
                    f"rate limit of tool '{tool.name}' reached; retry in {wait:.2f} s",
                    retry_after_s=wait,
                )
            output = await self._call(call, principal, tool, budget_s)
            if out_check is not None and (problems := out_check.problems(output)):
                raise _Outcome(
                    "INVALID_OUTPUT",
                    f"the output of '{tool.name}' does not match its output schema",
                    problems=problems,
                )
            result = self._result(call, "OK", output=call.redactor.value(output))
        except _Outcome as stop:
            result = self._result(
                call,
                stop.outcome,
                message=call.redactor.text(stop.message),
                problems=[
                    p.model_copy(update={"message": call.redactor.text(p.message)})
                    for p in stop.problems
                ],
                suggestions=stop.suggestions,
                retry_after_s=stop.retry_after_s,
            )
        except BaseException as exc:
            # The gateway's own trouble (PostgreSQL away, a locked vault): no result
            # to store, so the claim must not hold the key until its lease runs out.
            # The release waits for PostgreSQL to return: a claim left behind would
            # answer the command's redelivery "in flight" for the whole lease, and
            # nothing else would ever answer it.
            if call.claimed and principal is not None:
                tenant, key = principal.tenant, request.idempotency_key

                async def release() -> None:
                    await self.calls.release(tenant=tenant, key=key, call_id=call.call_id)

                with contextlib.suppress(Exception):
                    if isinstance(exc, Exception):
                        await _while_database_away(release)
                    else:  # cancelled: one attempt, no waiting
                        await release()
            raise
        messages = [self._event_message(result, caused_by)]
        usage = self._usage(result, call.tool)
        if usage is not None:
            messages.append(usage)
        await self._record(
            result,
            digest=call.digest,
            channel=channel,
            claimed=call.claimed,
            store=result.outcome in FINAL_OUTCOMES,
            messages=messages,
        )
        if self._observer.call_finished is not None:
            self._observer.call_finished(result.tool, result.outcome, result.latency_ms / 1000)
        return result

    async def _record(
        self,
        result: ToolCallEvent,
        *,
        digest: str,
        channel: str,
        claimed: bool,
        store: bool,
        messages: list[OutgoingMessage],
    ) -> None:
        """Write the audit row, the stored result and the events (one statement).

        A call that holds an idempotency claim, or came over Kafka, waits for
        the write: its stored result or its answer must be durable first. A
        synchronous call without a key writes behind its answer: the caller has
        the result already, and the write (retried while PostgreSQL is away) is
        awaited before the gateway stops. Either way a gateway that dies between
        calling the tool and this write loses the row; writing behind moves the
        answer ahead of the write, not the write's own guarantee.
        """
        synchronous = channel in _SYNCHRONOUS

        async def write() -> None:
            await self.calls.finish(
                result,
                args_digest=digest,
                channel=channel,
                claimed=claimed,
                store=store,
                messages=messages,
                wake_relay=not synchronous,
            )

        if claimed or not synchronous:
            # The tool has run: its result is in hand, so a PostgreSQL outage delays the
            # write rather than failing the call (which would run the tool again, or leave
            # its claim to answer the redelivery "in flight").
            await _while_database_away(write)
            return
        await self._writes_behind.acquire()  # bounded: a slow database slows callers down
        task = asyncio.create_task(self._write_behind(write, result.call_id))
        self._pending_writes.add(task)
        task.add_done_callback(self._pending_writes.discard)

    async def _write_behind(self, write: Callable[[], Awaitable[None]], call_id: str) -> None:
        try:
            await _while_database_away(write)
        except RetryableError as exc:
            _log.error("audit row of call %s is lost: %s", call_id, exc.message)
        except Exception:  # noqa: BLE001 - a background write must log, not vanish
            _log.exception("audit row of call %s could not be written", call_id)
        finally:
            self._writes_behind.release()

    async def drain(self, timeout_s: float = 30.0) -> None:
        """Wait (bounded) for the writes still behind their answers; call before stopping."""
        pending = set(self._pending_writes)
        if pending:
            _, late = await asyncio.wait(pending, timeout=timeout_s)
            for task in late:
                task.cancel()
            if late:
                _log.error("%d audit rows were still unwritten at shutdown", len(late))

    def _admit(
        self, call: _Call, auth_problem: str
    ) -> tuple[Principal, ToolSpec, SchemaCheck | None]:
        """Steps 1 and 2: who calls, may they, and are the arguments right."""
        principal, tool, request = call.principal, call.tool, call.request
        if principal is None:
            raise _Outcome("UNAUTHENTICATED", auth_problem or "no valid token")
        if tool is None:
            raise _Outcome(
                "UNKNOWN_TOOL",
                f"no tool named '{request.tool}'",
                suggestions=closest_names(request.tool, self.registry.names()),
            )
        if not principal.has_scope(tool.required_scope):
            raise _Outcome(
                "PERMISSION_DENIED",
                f"calling tool '{tool.name}' needs scope '{tool.required_scope}'",
            )
        in_check, out_check = self._schema_checks(tool)
        problems = in_check.problems(request.arguments)
        if problems:
            raise _Outcome(
                "INVALID_ARGUMENTS",
                f"the arguments do not match the input schema of '{tool.name}'"
                f" ({len(problems)} problem{'s' if len(problems) != 1 else ''})",
                problems=problems,
            )
        return principal, tool, out_check

    async def _claim(
        self, call: _Call, principal: Principal, tool: ToolSpec
    ) -> ToolCallEvent | None:
        """Step 3: the stored result of an answered key, else claim the key for this call.

        A claim whose answer was lost (PostgreSQL went away as it committed) may hold
        the key: the next try of the same key here uses that claim's call id, which
        the claim lets take over its own running row, so the key is not "in flight"
        until the lease runs out. Another instance never knows the id: the lease
        still keeps it out.
        """
        key = call.request.idempotency_key
        slot = (principal.tenant, key)
        # Taken, not read: of two tries at once only one may take the claim over.
        call.call_id = self._unsure_claims.pop(slot, call.call_id)
        try:
            claim = await self.calls.claim(
                tenant=principal.tenant,
                key=key,
                call_id=call.call_id,
                tool=tool.name,
                args_digest=call.digest,
                lease_s=self._claim_lease_s,
            )
        except RetryableError:
            self._unsure_claims[slot] = call.call_id  # newest last: the oldest go first
            while len(self._unsure_claims) > _MAX_UNSURE_CLAIMS:
                del self._unsure_claims[next(iter(self._unsure_claims))]
            raise
        if claim.state == "replay":
            return claim.result
        if claim.state == "busy":
            raise _Outcome(
                "CONFLICT", f"a call with idempotency key '{key}' is in flight", retry_after_s=1.0
            )
        if claim.state == "mismatch":
            raise _Outcome(
                "CONFLICT",
                f"idempotency key '{key}' was first used for a different call"
                " (another tool or other arguments)",
            )
        call.claimed = True
        return None

    @staticmethod
    def _budget(request: CallRequest, tool: ToolSpec) -> float:
        """The call's time budget: the tool's timeout, cut by the call's deadline."""
        budget_s = tool.timeout_s
        if request.deadline is not None:
            left = (request.deadline - datetime.now(UTC)).total_seconds()
            if left <= 0:
                raise _Outcome("DEADLINE_EXCEEDED", "the call's deadline has passed")
            budget_s = min(budget_s, left)
        return budget_s

    async def _call(
        self, call: _Call, principal: Principal, tool: ToolSpec, budget_s: float
    ) -> Any:
        """Steps 5 to 7: the breaker, the credential, the call with its budget."""
        request, redactor = call.request, call.redactor
        admission = self.breakers.admit(tool.name)
        if not admission.allowed:
            raise _Outcome(
                "RATE_LIMITED" if admission.rate_limited else "CIRCUIT_OPEN",
                admission.reason,
                retry_after_s=admission.retry_after_s,
            )
        credential = None
        endpoint = tool.http or tool.mcp
        try:
            if endpoint is not None and endpoint.auth is not None:
                credential = await self.vault.get(
                    tool=tool.name,
                    name=endpoint.auth.credential,
                    tenant=principal.tenant,
                    agent=principal.subject,
                )
                if credential is not None:
                    redactor.add(credential)
                    redactor.add(endpoint.auth.prefix + credential)
            context = CallContext(
                timeout_s=budget_s,
                max_output_bytes=self._max_output_bytes,
                idempotency_key=request.idempotency_key,
                credential=credential,
            )
            invoker = self._invokers.get(tool.kind)
            if invoker is None:
                raise ToolFailure(
                    "PERMANENT", f"this gateway cannot call tools of kind '{tool.kind}'"
                )
            async with asyncio.timeout(budget_s):
                output = await invoker.call(tool, request.arguments, context)
        except TimeoutError:
            self.breakers.failed(tool.name)
            raise _Outcome(
                "TRANSIENT", f"tool '{tool.name}' did not answer within {budget_s:.3g} s"
            ) from None
        except ToolFailure as failure:
            if failure.outcome == "TRANSIENT":
                self.breakers.failed(tool.name)
            elif failure.outcome == "RATE_LIMITED":
                self.breakers.cool_down(tool.name, failure.retry_after_s or 1.0)
            else:
                self.breakers.succeeded(tool.name)  # it answered: the tool is up
            raise _Outcome(
                failure.outcome, failure.message, retry_after_s=failure.retry_after_s
            ) from None
        except BaseException:
            self.breakers.released(tool.name)
            raise
        self.breakers.succeeded(tool.name)
        size = len(json.dumps(output, default=str).encode())
        if size > self._max_output_bytes:
            raise _Outcome(
                "PERMANENT",
                f"tool output is {size} bytes, over the limit of {self._max_output_bytes}",
            )
        return output

    async def _replay(
        self,
        stored: ToolCallEvent,
        call: _Call,
        *,
        channel: str,
        caused_by: Event[Any] | None,
    ) -> ToolCallEvent:
        request = call.request
        result = stored.model_copy(
            update={
                "replayed": True,
                "attempt": request.attempt,
                "completed_at": datetime.now(UTC),
                "task_id": request.task_id or stored.task_id,
                "step": request.step or stored.step,
            }
        )
        await self._record(
            result,
            digest=call.digest,
            channel=channel,
            claimed=False,
            store=False,
            messages=[self._event_message(result, caused_by)],
        )
        if self._observer.call_finished is not None:
            self._observer.call_finished(result.tool, result.outcome, 0.0)
        return result

    def _schema_checks(self, tool: ToolSpec) -> tuple[SchemaCheck, SchemaCheck | None]:
        """The compiled schemas of ``tool``, compiled again only when its definition changed."""
        cached = self._checks.get(tool.name)
        if cached is not None and cached[0] is tool:
            return cached[1]
        if cached is not None and cached[0] == tool:  # the registry reloaded, nothing changed
            self._checks[tool.name] = (tool, cached[1])
            return cached[1]
        checks = (
            SchemaCheck(tool.input_schema),
            SchemaCheck(tool.output_schema) if tool.output_schema is not None else None,
        )
        self._checks[tool.name] = (tool, checks)
        return checks

    def _result(
        self,
        call: _Call,
        outcome: CallOutcome,
        *,
        output: Any = None,
        message: str = "",
        problems: list[CallProblem] | None = None,
        suggestions: list[str] | None = None,
        retry_after_s: float | None = None,
    ) -> ToolCallEvent:
        request, principal, tool = call.request, call.principal, call.tool
        charged = tool is not None and outcome in {"OK", "INVALID_OUTPUT"}
        return ToolCallEvent(
            call_id=call.call_id,
            task_id=request.task_id,
            step=request.step,
            tool=tool.name if tool is not None else request.tool,
            tool_version=tool.version if tool is not None else "",
            idempotency_key=request.idempotency_key,
            outcome=outcome,
            output=output,
            message=message,
            problems=problems or [],
            suggestions=suggestions or [],
            retry_after_s=retry_after_s,
            retryable=outcome in RETRYABLE_OUTCOMES,
            latency_ms=round((time.perf_counter() - call.started) * 1000, 3),
            attempt=request.attempt,
            cost_micros=tool.price_micros if charged and tool is not None else 0,
            principal=principal.subject if principal is not None else "",
            acting_for=list(principal.actor_chain) if principal is not None else [],
            tenant=principal.tenant if principal is not None else "",
            completed_at=datetime.now(UTC),
        )

    def _event_message(
        self, result: ToolCallEvent, caused_by: Event[Any] | None
    ) -> OutgoingMessage:
        return self._bus.message(
            TOOL_CALLS,
            result,
            caused_by=caused_by,
            event_type="mainstay.tools.call.ok"
            if result.outcome == "OK"
            else "mainstay.tools.call.failed",
            tenant=result.tenant or None,
            correlation_id=result.task_id or None,
            subject=result.tool,
        )

    def _usage(self, result: ToolCallEvent, tool: ToolSpec | None) -> OutgoingMessage | None:
        if tool is None or result.cost_micros <= 0 or not result.task_id or result.replayed:
            return None
        usage = RecordUsageCommand(
            usage_id=f"tool:{result.tenant}:{result.idempotency_key or result.call_id}",
            tenant=result.tenant,
            agent=result.principal,
            task_id=result.task_id,
            step=result.step,
            kind="tool",
            resource=tool.name,
            calls=1,
            list_price_micros=tool.price_micros,
            occurred_at=result.completed_at,
        )
        return self._bus.message(
            RECORD_USAGE, usage, tenant=result.tenant, correlation_id=result.task_id
        )

    # -- the registry --------------------------------------------------------------

    def list_tools(self, principal: Principal | None = None) -> list[ToolSpec]:
        """Every tool, or those ``principal`` may call."""
        tools = self.registry.all()
        if principal is None:
            return tools
        return [t for t in tools if principal.has_scope(t.required_scope)]

    def get_tool(self, name: str) -> ToolSpec:
        tool = self.registry.get(name)
        if tool is None:
            suggestions = closest_names(name, self.registry.names())
            hint = (
                f"; did you mean {', '.join(repr(s) for s in suggestions)}?" if suggestions else ""
            )
            raise NotFound(f"no tool named '{name}'{hint}")
        return tool

    async def register(self, spec: ToolSpec, *, changed_by: str) -> bool:
        """Register or replace a tool; ``False`` when nothing changed."""
        for label, schema in (
            ("input_schema", spec.input_schema),
            ("output_schema", spec.output_schema),
        ):
            if schema is None:
                continue
            problem = schema_problem(schema)
            if problem:
                raise InvalidArgument(
                    f"tool '{spec.name}': {label} is not a valid JSON Schema: {problem}"
                )
        if spec.mcp is not None:
            self.check_mcp_transport(spec.mcp.transport)
        if spec.kind not in self._invokers:
            raise InvalidArgument(
                f"tool '{spec.name}': this gateway cannot call tools of kind '{spec.kind}'"
            )
        if spec.builtin is not None and spec.builtin.builtin not in self._builtin_names:
            raise InvalidArgument(
                f"tool '{spec.name}': no builtin named '{spec.builtin.builtin}'"
                f" (builtins: {', '.join(self._builtin_names)})"
            )
        changed = await self.registry.put(spec, changed_by=changed_by)
        if changed:
            _log.info("tool %s version %s registered by %s", spec.name, spec.version, changed_by)
        return changed

    def check_mcp_transport(self, transport: str) -> None:
        """Refuse stdio MCP servers unless this gateway allows running their commands."""
        if transport == "stdio" and not self._mcp_stdio_enabled:
            raise InvalidArgument(
                "MCP servers over stdio are disabled on this gateway (their command would run"
                " on its host); set TOOLS_GATEWAY_MCP_STDIO_ENABLED=true to allow them"
            )

    async def remove(self, name: str, *, changed_by: str) -> None:
        if not await self.registry.remove(name, changed_by=changed_by):
            raise NotFound(f"no tool named '{name}'")
        _log.info("tool %s removed by %s", name, changed_by)

    # -- the vault -----------------------------------------------------------------

    async def set_credential(
        self, tool: str, name: str, value: str, *, tenant: str, agent: str, changed_by: str
    ) -> None:
        self.get_tool(tool)
        await self.vault.put(tool=tool, name=name, value=value, tenant=tenant, agent=agent)
        await self._credential_changed(
            "credential-set", tool, name, tenant=tenant, agent=agent, changed_by=changed_by
        )

    async def remove_credential(
        self, tool: str, name: str, *, tenant: str, agent: str, changed_by: str
    ) -> None:
        if not await self.vault.delete(tool=tool, name=name, tenant=tenant, agent=agent):
            raise NotFound(f"tool '{tool}' has no credential '{name}' for that owner")
        await self._credential_changed(
            "credential-removed", tool, name, tenant=tenant, agent=agent, changed_by=changed_by
        )

    async def _credential_changed(
        self,
        kind: Literal["credential-set", "credential-removed"],
        tool: str,
        name: str,
        *,
        tenant: str,
        agent: str,
        changed_by: str,
    ) -> None:
        await self.registry.announce_credential(
            ToolEvent(
                type=kind,
                name=tool,
                credential=name,
                tenant=tenant,
                agent=agent,
                changed_by=changed_by,
                occurred_at=datetime.now(UTC),
            )
        )


async def _while_database_away(write: Callable[[], Awaitable[None]]) -> None:
    """``write``, tried again while PostgreSQL is away (up to the write-behind patience)."""
    delay = 0.2
    give_up = time.monotonic() + _WRITE_BEHIND_PATIENCE_S
    while True:
        try:
            await write()
        except RetryableError:
            if time.monotonic() >= give_up:
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
            continue
        return
