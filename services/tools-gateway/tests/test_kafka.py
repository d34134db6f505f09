"""The Kafka doors: invoke-tool commands answered on tools.evt.tool-call.v1, register-tool, DLQ."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from mainstay_common.bus import Bus
from mainstay_common.testing import read_records
from mainstay_contracts.ledger import RECORD_USAGE
from mainstay_contracts.tools import (
    INVOKE_TOOL,
    REGISTER_TOOL,
    TOOL_CALLS,
    TOOL_EVENTS,
    InvokeToolCommand,
    RegisterToolCommand,
    ToolSpec,
)

from .conftest import Gateway, unique

pytestmark = pytest.mark.real


async def records_of(
    gateway: Gateway, topic: str, *, match: dict[str, Any], count: int, wait_s: float = 20.0
) -> list[tuple[str, dict[str, Any], dict[str, str]]]:
    """``(key, payload, headers)`` of records on ``topic`` whose payload contains ``match``."""

    def matches(record: Any) -> bool:
        payload = json.loads(record.value)
        return all(payload.get(k) == v for k, v in match.items())

    records = await read_records(
        gateway.kafka.bootstrap,
        f"{gateway.kafka.topic_prefix}{topic}",
        count=count,
        accept=matches,
        wait_s=wait_s,
    )
    return [
        (
            r.key.decode(),
            json.loads(r.value),
            {k: v.decode("utf-8", "replace") for k, v in r.headers},
        )
        for r in records
    ]


async def publish(gateway: Gateway, spec: Any, payload: Any, **envelope: Any) -> str:
    async with Bus(service="tests", kafka=gateway.kafka) as bus:
        return await bus.publish(spec, payload, **envelope)


def command(
    gateway: Gateway, tool: str, arguments: dict[str, Any], **fields: Any
) -> InvokeToolCommand:
    token = fields.pop("token", None) or gateway.token("acme", [f"tools:call:{tool}"])
    return InvokeToolCommand(
        task_id=fields.pop("task_id", f"task-{uuid.uuid4().hex[:8]}"),
        tool=tool,
        arguments=arguments,
        token=token,
        **fields,
    )


async def test_an_invoke_command_is_answered_on_the_tool_call_topic(gateway: Gateway) -> None:
    cmd = command(gateway, "calculator", {"expression": "6*7"}, step=4)
    event_id = await publish(gateway, INVOKE_TOOL, cmd)
    [(key, result, headers)] = await records_of(
        gateway, TOOL_CALLS.name, match={"task_id": cmd.task_id}, count=1
    )
    assert key == cmd.task_id
    assert (result["outcome"], result["output"], result["step"]) == ("OK", 42, 4)
    assert result["untrusted"] is True
    assert headers["ce_type"] == "mainstay.tools.call.ok"
    assert headers["ce_causationid"] == event_id
    assert headers["ce_tenant"] == "acme"


async def test_a_redelivered_command_replays_and_the_tool_runs_once(gateway: Gateway) -> None:
    name = unique("book")
    await gateway.register(gateway.http_tool(name, "/echo", side_effects=True, price_micros=1200))
    key = f"task-{uuid.uuid4().hex[:6]}:2"
    cmd = command(gateway, name, {"seat": "12A"}, idempotency_key=key, step=2)
    await publish(gateway, INVOKE_TOOL, cmd)
    await publish(gateway, INVOKE_TOOL, cmd.model_copy(update={"attempt": 2}))
    results = await records_of(gateway, TOOL_CALLS.name, match={"task_id": cmd.task_id}, count=2)
    assert [r[1]["replayed"] for r in results] == [False, True]
    assert results[0][1]["output"] == results[1][1]["output"]
    assert gateway.tools.by_key[key] == 1
    # One usage record for the ledger, for the one real call.
    usage = await records_of(
        gateway, RECORD_USAGE.name, match={"task_id": cmd.task_id}, count=2, wait_s=3
    )
    assert len(usage) == 1
    assert usage[0][1]["usage_id"] == f"tool:acme:{key}"
    assert (usage[0][1]["resource"], usage[0][1]["calls"], usage[0][1]["list_price_micros"]) == (
        name,
        1,
        1200,
    )


async def test_bad_tokens_unknown_tools_and_bad_arguments_are_results_not_crashes(
    gateway: Gateway,
) -> None:
    task = f"task-{uuid.uuid4().hex[:8]}"
    await publish(
        gateway, INVOKE_TOOL, command(gateway, "calculator", {}, token="garbage", task_id=task)
    )
    await publish(gateway, INVOKE_TOOL, command(gateway, "calculater", {}, task_id=task))
    await publish(gateway, INVOKE_TOOL, command(gateway, "calculator", {"expr": "1"}, task_id=task))
    await publish(
        gateway,
        INVOKE_TOOL,
        command(
            gateway,
            "calculator",
            {"expression": "1"},
            task_id=task,
            token=gateway.token("acme", ["tools:call:other"]),
        ),
    )
    results = await records_of(gateway, TOOL_CALLS.name, match={"task_id": task}, count=4)
    assert [r[1]["outcome"] for r in results] == [
        "UNAUTHENTICATED",
        "UNKNOWN_TOOL",
        "INVALID_ARGUMENTS",
        "PERMISSION_DENIED",
    ]
    assert results[0][1]["message"] == "malformed token"
    assert results[1][1]["suggestions"][0] == "calculator"


async def test_a_malformed_command_goes_to_the_dlq_with_its_reason(gateway: Gateway) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=gateway.kafka.bootstrap)
    await producer.start()
    marker = uuid.uuid4().hex
    try:
        await producer.send_and_wait(
            f"{gateway.kafka.topic_prefix}{INVOKE_TOOL.name}",
            key=b"task-bad",
            value=json.dumps({"task_id": "task-bad", "marker": marker}).encode(),
            headers=[
                ("ce_specversion", b"1.0"),
                ("ce_id", marker.encode()),
                ("ce_type", b"mainstay.tools.invoke-tool"),
                ("ce_source", b"tests"),
                ("ce_time", b"2026-01-01T00:00:00Z"),
                ("content-type", b"application/json"),
            ],
        )
    finally:
        await producer.stop()
    dlq = await records_of(gateway, "tools.invoke.dlq", match={"marker": marker}, count=1)
    assert len(dlq) == 1
    headers = dlq[0][2]
    assert headers["mainstay-error-class"] == "invalid"
    assert "tool" in headers["mainstay-error-message"]
    assert "token" in headers["mainstay-error-message"]


async def test_register_tool_command_adds_a_tool_and_announces_it(gateway: Gateway) -> None:
    name = unique("registered")
    spec = ToolSpec.model_validate(gateway.http_tool(name, "/echo", description="from Kafka"))
    await publish(
        gateway,
        REGISTER_TOOL,
        RegisterToolCommand(token=gateway.token("acme", ["tools:admin"]), tool=spec),
    )
    for _ in range(100):
        if (
            await gateway.http.get(f"/v1/tools/{name}", headers=gateway.admin_headers())
        ).status_code == 200:
            break
        await asyncio.sleep(0.1)
    got = await gateway.http.get(f"/v1/tools/{name}", headers=gateway.admin_headers())
    assert got.status_code == 200
    assert got.json()["description"] == "from Kafka"
    [(key, event, headers)] = await records_of(
        gateway, TOOL_EVENTS.name, match={"name": name}, count=1
    )
    assert key == name
    assert event["type"] == "registered"
    assert headers["ce_type"] == "mainstay.tools.registered"

    # Without the admin scope the command is refused and dead-lettered, naming the scope.
    other = ToolSpec.model_validate(gateway.http_tool(unique("sneaky"), "/echo"))
    await publish(
        gateway,
        REGISTER_TOOL,
        RegisterToolCommand(token=gateway.token("acme", ["tools:call:*"]), tool=other),
    )
    dlq = await records_of(gateway, "tools.register.dlq", match={}, count=1)
    assert any(other.name in json.dumps(r[1]) for r in dlq)
    assert "tools:admin" in dlq[-1][2]["mainstay-error-message"]


async def test_a_hanging_tool_times_out_and_the_worker_keeps_serving(gateway: Gateway) -> None:
    slow = unique("hang")
    await gateway.register(gateway.http_tool(slow, "/slow", timeout_s=2.0))
    slow_task, quick_task = f"task-{uuid.uuid4().hex[:8]}", f"task-{uuid.uuid4().hex[:8]}"
    await publish(gateway, INVOKE_TOOL, command(gateway, slow, {}, task_id=slow_task))
    await publish(
        gateway,
        INVOKE_TOOL,
        command(gateway, "calculator", {"expression": "1"}, task_id=quick_task),
    )
    # Meanwhile the HTTP door is not held up by the hanging call.
    assert (await gateway.invoke("calculator", {"expression": "2"}))["outcome"] == "OK"
    [(_, hung, _)] = await records_of(
        gateway, TOOL_CALLS.name, match={"task_id": slow_task}, count=1
    )
    [(_, quick, _)] = await records_of(
        gateway, TOOL_CALLS.name, match={"task_id": quick_task}, count=1
    )
    assert hung["outcome"] == "TRANSIENT"
    assert hung["retryable"] is True
    assert hung["message"] == f"tool '{slow}' did not answer within 2 s"
    assert quick["outcome"] == "OK"
