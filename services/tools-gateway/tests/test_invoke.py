"""Tool calls through the real gateway's HTTP API against a real HTTP tool server."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from typing import Any

import pytest
from asyncpg.exceptions._base import InternalClientError

from mainstay_common.errors import DependencyUnavailable
from mainstay_common.testing import read_records
from mainstay_tools_gateway.domain.redaction import REDACTED

from .conftest import Gateway, unique

pytestmark = pytest.mark.real


def tenant() -> str:
    return f"tenant-{uuid.uuid4().hex[:8]}"


FORECAST_INPUT = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "minLength": 1},
        "days": {"type": "integer", "minimum": 1, "maximum": 14},
    },
    "required": ["city", "days"],
    "additionalProperties": False,
}


async def test_calculator_answers_the_number(gateway: Gateway) -> None:
    result = await gateway.invoke("calculator", {"expression": "2*(3+4)"})
    assert result["outcome"] == "OK"
    assert result["output"] == 14
    assert result["untrusted"] is True
    assert result["retryable"] is False


async def test_schema_violations_are_listed_and_the_tool_is_not_called(gateway: Gateway) -> None:
    name = unique("forecast")
    await gateway.register(gateway.http_tool(name, "/echo", input_schema=FORECAST_INPUT))
    before = gateway.tools.calls["echo"]
    result = await gateway.invoke(name, {"city": 5, "days": 40, "units": "C"})
    assert result["outcome"] == "INVALID_ARGUMENTS"
    assert "input schema" in result["message"]
    problems = {p["path"]: p["message"] for p in result["problems"]}
    assert problems["/city"] == "5 is not of type 'string'"
    assert problems["/days"] == "40 is greater than the maximum of 14"
    assert "'units' was unexpected" in problems[""]
    assert gateway.tools.calls["echo"] == before
    fixed = await gateway.invoke(name, {"city": "Berlin", "days": 3})
    assert fixed["outcome"] == "OK"
    assert fixed["output"]["body"] == {"city": "Berlin", "days": 3}


async def test_an_unknown_tool_gets_the_closest_names(gateway: Gateway) -> None:
    result = await gateway.invoke("calculater", {"expression": "1"})
    assert result["outcome"] == "UNKNOWN_TOOL"
    assert result["message"] == "no tool named 'calculater'"
    assert result["suggestions"][0] == "calculator"


async def test_a_missing_scope_is_denied_before_anything_else(gateway: Gateway) -> None:
    name = unique("guarded")
    await gateway.register(
        gateway.http_tool(name, "/echo", input_schema=FORECAST_INPUT, scope="billing:refund")
    )
    before = gateway.tools.calls["echo"]
    # Even invalid arguments: the scope is checked first.
    denied = await gateway.invoke(name, {"city": 1}, scopes=[f"tools:call:{name}"])
    assert denied["outcome"] == "PERMISSION_DENIED"
    assert denied["message"] == f"calling tool '{name}' needs scope 'billing:refund'"
    allowed = await gateway.invoke(name, {"city": "Oslo", "days": 1}, scopes=["billing:refund"])
    assert allowed["outcome"] == "OK"
    assert gateway.tools.calls["echo"] == before + 1


async def test_no_token_or_a_bad_one_is_401(gateway: Gateway) -> None:
    response = await gateway.http.post("/v1/tools/calculator/invoke", json={"arguments": {}})
    assert response.status_code == 401
    assert response.json()["error"]["message"] == "missing bearer token"
    response = await gateway.http.post(
        "/v1/tools/calculator/invoke",
        json={"arguments": {}},
        headers={"Authorization": "Bearer not-a-jwt"},
    )
    assert response.status_code == 401


async def test_a_4xx_is_permanent_and_a_5xx_transient(gateway: Gateway) -> None:
    rejecting = unique("reject")
    await gateway.register(gateway.http_tool(rejecting, "/reject"))
    result = await gateway.invoke(rejecting, {})
    assert result["outcome"] == "PERMANENT"
    assert result["retryable"] is False
    assert "HTTP 400" in result["message"]
    assert "no such customer" in result["message"]

    flaky = unique("flaky")
    await gateway.register(gateway.http_tool(flaky, f"/flaky/{flaky}"))
    gateway.tools.fail_next[flaky] = 1
    result = await gateway.invoke(flaky, {})
    assert result["outcome"] == "TRANSIENT"
    assert result["retryable"] is True
    assert (await gateway.invoke(flaky, {}))["outcome"] == "OK"


async def test_output_is_checked_against_its_schema_and_its_size(gateway: Gateway) -> None:
    wrong = unique("wrong")
    await gateway.register(
        gateway.http_tool(
            wrong,
            "/wrong",
            output_schema={"type": "object", "required": ["answer"]},
        )
    )
    result = await gateway.invoke(wrong, {})
    assert result["outcome"] == "INVALID_OUTPUT"
    assert result["problems"] == [{"path": "", "message": "'answer' is a required property"}]

    big = unique("big")
    await gateway.register(gateway.http_tool(big, "/big"))
    result = await gateway.invoke(big, {})
    assert result["outcome"] == "PERMANENT"
    assert "larger than the limit of 262144 bytes" in result["message"]


async def test_a_hanging_tool_times_out_while_other_calls_are_served(gateway: Gateway) -> None:
    slow = unique("slow")
    await gateway.register(gateway.http_tool(slow, "/slow", timeout_s=1.0))
    hanging = asyncio.create_task(gateway.invoke(slow, {}))
    quick = await gateway.invoke("calculator", {"expression": "1+1"})
    assert quick["outcome"] == "OK"
    assert not hanging.done()  # the quick call did not wait for the hanging one
    result = await hanging
    assert result["outcome"] == "TRANSIENT"
    assert result["message"] == f"tool '{slow}' did not answer within 1 s"


async def test_a_passed_deadline_is_not_called(gateway: Gateway) -> None:
    name = unique("late")
    await gateway.register(gateway.http_tool(name, "/echo"))
    before = gateway.tools.calls["echo"]
    result = await gateway.invoke(name, {}, deadline="2020-01-01T00:00:00Z")
    assert result["outcome"] == "DEADLINE_EXCEEDED"
    assert gateway.tools.calls["echo"] == before


async def test_circuit_opens_after_failures_and_closes_after_a_successful_probe(
    gateway: Gateway,
) -> None:
    # The test gateway opens after 3 consecutive TRANSIENT failures, for 1 s.
    name = unique("breaker")
    path = f"flaky/{name}"
    await gateway.register(gateway.http_tool(name, f"/{path}"))
    gateway.tools.fail_next[name] = 3
    for _ in range(3):
        assert (await gateway.invoke(name, {}))["outcome"] == "TRANSIENT"
    assert gateway.tools.calls[path] == 3

    refused = await gateway.invoke(name, {})
    assert refused["outcome"] == "CIRCUIT_OPEN"
    assert refused["retryable"] is True
    assert 0 < refused["retry_after_s"] <= 1.0
    assert gateway.tools.calls[path] == 3  # refused at once, the tool never saw it

    metrics = (await gateway.http.get("/metrics")).text
    assert f'mainstay_tool_circuit_state{{tool="{name}"}} 2.0' in metrics

    await asyncio.sleep(refused["retry_after_s"] + 0.1)
    probe = await gateway.invoke(name, {})
    assert probe["outcome"] == "OK"
    assert gateway.tools.calls[path] == 4
    assert (await gateway.invoke(name, {}))["outcome"] == "OK"
    metrics = (await gateway.http.get("/metrics")).text
    assert f'mainstay_tool_circuit_state{{tool="{name}"}} 0.0' in metrics


async def test_the_tools_retry_after_is_honoured(gateway: Gateway) -> None:
    name = unique("limited")
    await gateway.register(gateway.http_tool(name, "/limited"))
    gateway.tools.limited = True
    gateway.tools.retry_after = "2"
    before = gateway.tools.calls["limited"]
    first = await gateway.invoke(name, {})
    assert first["outcome"] == "RATE_LIMITED"
    assert first["retry_after_s"] == 2.0
    assert gateway.tools.calls["limited"] == before + 1

    gateway.tools.limited = False
    response = await gateway.http.post(
        f"/v1/tools/{name}/invoke",
        json={"arguments": {}},
        headers=gateway.headers("acme", [f"tools:call:{name}"]),
    )
    second = response.json()
    assert second["outcome"] == "RATE_LIMITED"  # not sent: the tool asked for 2 s
    assert 0 < second["retry_after_s"] <= 2.0
    assert response.headers["Retry-After"] in {"1", "2"}
    assert gateway.tools.calls["limited"] == before + 1

    await asyncio.sleep(second["retry_after_s"] + 0.1)
    assert (await gateway.invoke(name, {}))["outcome"] == "OK"
    assert gateway.tools.calls["limited"] == before + 2


async def test_the_gateways_own_rate_limit_per_agent_and_for_all_agents(gateway: Gateway) -> None:
    name = unique("metered")
    await gateway.register(
        gateway.http_tool(
            name,
            "/echo",
            rate_limit={
                "per_agent": {"per_second": 0.001, "burst": 2},
                "all_agents": {"per_second": 0.001, "burst": 3},
            },
        )
    )
    t = tenant()
    outcomes = [
        (await gateway.invoke(name, {}, tenant=t, subject="a"))["outcome"] for _ in range(3)
    ]
    assert outcomes == ["OK", "OK", "RATE_LIMITED"]
    limited = await gateway.invoke(name, {}, tenant=t, subject="a")
    assert limited["retry_after_s"] > 100  # 0.001 tokens per second
    assert "rate limit" in limited["message"]
    # Agent b has its own bucket, but the tool's shared bucket has one token left.
    b = [(await gateway.invoke(name, {}, tenant=t, subject="b"))["outcome"] for _ in range(2)]
    assert b == ["OK", "RATE_LIMITED"]


async def test_idempotent_replay_calls_the_tool_once(gateway: Gateway) -> None:
    name = unique("charge")
    await gateway.register(gateway.http_tool(name, "/echo", side_effects=True, price_micros=2500))
    key = f"task-{uuid.uuid4().hex[:6]}:3"
    first = await gateway.invoke(
        name, {"amount": 10}, idempotency_key=key, task_id="task-x", step=3
    )
    second = await gateway.invoke(
        name, {"amount": 10}, idempotency_key=key, task_id="task-x", step=3, attempt=2
    )
    assert first["outcome"] == second["outcome"] == "OK"
    assert second["output"] == first["output"]
    assert second["call_id"] == first["call_id"]
    assert (first["replayed"], second["replayed"]) == (False, True)
    assert second["attempt"] == 2
    assert gateway.tools.by_key[key] == 1  # the tool's own server counted one call

    other = await gateway.invoke(name, {"amount": 99}, idempotency_key=key)
    assert other["outcome"] == "CONFLICT"
    assert "first used for a different call" in other["message"]
    assert gateway.tools.by_key[key] == 1


async def test_a_transient_failure_is_not_stored_so_a_retry_runs_again(gateway: Gateway) -> None:
    name = unique("retryable")
    await gateway.register(gateway.http_tool(name, f"/flaky/{name}", side_effects=True))
    gateway.tools.fail_next[name] = 1
    key = f"k-{uuid.uuid4().hex[:6]}"
    assert (await gateway.invoke(name, {}, idempotency_key=key))["outcome"] == "TRANSIENT"
    retried = await gateway.invoke(name, {}, idempotency_key=key)
    assert retried["outcome"] == "OK"
    assert retried["replayed"] is False
    assert (await gateway.invoke(name, {}, idempotency_key=key))["replayed"] is True
    assert gateway.tools.by_key[key] == 2


async def test_credentials_are_injected_and_never_returned_logged_or_stored_in_clear(
    gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    name = unique("secretive")
    secret = f"sk-live-{uuid.uuid4().hex}"
    agent_secret = f"sk-agent-{uuid.uuid4().hex}"
    await gateway.register(
        gateway.http_tool(name, "/echo", http={"auth": {"credential": "api_key"}})
    )
    response = await gateway.http.put(
        f"/v1/tools/{name}/credentials/api_key",
        json={"value": secret, "tenant": "acme"},
        headers=gateway.admin_headers(),
    )
    assert response.status_code == 204, response.text
    response = await gateway.http.put(
        f"/v1/tools/{name}/credentials/api_key",
        json={"value": agent_secret, "tenant": "acme", "agent": "agent-7"},
        headers=gateway.admin_headers(),
    )
    assert response.status_code == 204, response.text

    result = await gateway.invoke(name, {"q": 1})
    assert gateway.tools.last_headers["authorization"] == f"Bearer {secret}"
    assert result["outcome"] == "OK"
    assert result["output"]["authorization"] == REDACTED  # the tool echoed it back
    await gateway.invoke(name, {"q": 1}, subject="agent-7")
    assert gateway.tools.last_headers["authorization"] == f"Bearer {agent_secret}"

    listed = await gateway.http.get(
        f"/v1/tools/{name}/credentials", headers=gateway.admin_headers()
    )
    assert {(c["name"], c["agent"]) for c in listed.json()} == {
        ("api_key", ""),
        ("api_key", "agent-7"),
    }
    assert secret not in listed.text

    # Without a credential for the tenant: a clear failure, no call.
    other = await gateway.invoke(name, {}, tenant=tenant())
    assert other["outcome"] == "PERMANENT"
    assert "needs credential 'api_key'" in other["message"]

    stored = await gateway.app.gateway.vault._database.fetch(  # type: ignore[union-attr]
        "SELECT ciphertext FROM credentials WHERE tool = $1", name
    )
    assert stored
    assert all(secret.encode() not in bytes(r["ciphertext"]) for r in stored)
    audit = json.dumps(await gateway.audit("acme", count=2, params={"tool": name}))
    assert '"outcome": "OK"' in audit
    assert secret not in audit
    assert agent_secret not in audit
    assert secret not in caplog.text
    assert agent_secret not in caplog.text
    await gateway.app.gateway.registry.reload()  # type: ignore[union-attr]
    events = await read_topic_text(gateway, "tools.evt.tool.v1") + await read_topic_text(
        gateway, "tools.evt.tool-call.v1"
    )
    assert name in events
    assert secret not in events
    assert agent_secret not in events


async def read_topic_text(gateway: Gateway, topic: str) -> str:
    """Every value and header on ``topic`` so far, as text."""
    records = await read_records(
        gateway.kafka.bootstrap, f"{gateway.kafka.topic_prefix}{topic}", count=10**6, wait_s=2.5
    )
    chunks = [r.value.decode() for r in records]
    chunks += [v.decode("utf-8", "replace") for r in records for _, v in r.headers]
    return "\n".join(chunks)


async def test_the_audit_records_every_call_with_its_outcome(gateway: Gateway) -> None:
    t = tenant()
    name = unique("audited")
    await gateway.register(
        gateway.http_tool(name, "/echo", input_schema=FORECAST_INPUT, price_micros=700)
    )
    ok = await gateway.invoke(
        name, {"city": "Rome", "days": 2}, tenant=t, idempotency_key="a1", task_id="t-1", step=1
    )
    await gateway.invoke(name, {"city": "Rome", "days": 2}, tenant=t, idempotency_key="a1")
    await gateway.invoke(name, {"city": "Rome"}, tenant=t)
    await gateway.invoke(name, {"city": "Rome", "days": 2}, tenant=t, scopes=["tools:call:other"])
    await gateway.invoke(f"{name}x", {}, tenant=t)

    rows = await gateway.audit(t, count=5)
    assert [r["outcome"] for r in rows] == [
        "UNKNOWN_TOOL",
        "PERMISSION_DENIED",
        "INVALID_ARGUMENTS",
        "OK",
        "OK",
    ]
    first = rows[-1]
    assert first["call_id"] == ok["call_id"]
    assert first["principal"] == "agent-1"
    assert first["tool"] == name
    assert first["args_digest"].startswith("sha256:")
    assert first["cost_micros"] == 700
    assert first["task_id"] == "t-1"
    assert first["channel"] == "http"
    assert first["latency_ms"] > 0
    assert (rows[-2]["replayed"], rows[-2]["cost_micros"]) == (True, 700)
    assert rows[0]["tool"] == f"{name}x"

    # Another tenant sees none of it; the audit needs its scope.
    other = await gateway.http.get("/v1/audit", headers=gateway.headers(tenant(), ["tools:audit"]))
    assert other.json()["calls"] == []
    denied = await gateway.http.get("/v1/audit", headers=gateway.headers(t, ["tools:call:*"]))
    assert denied.status_code == 403
    filtered = await gateway.http.get(
        "/v1/audit",
        params={"outcome": "OK", "task_id": "t-1"},
        headers=gateway.headers(t, ["tools:audit"]),
    )
    assert [r["call_id"] for r in filtered.json()["calls"]] == [ok["call_id"]] * 2


async def test_http_fetch_reaches_allow_listed_hosts_only(gateway: Gateway) -> None:
    # The test gateway allows 127.0.0.1 only.
    fetched = await gateway.invoke("http_fetch", {"url": f"{gateway.tools.base_url}/echo"})
    assert fetched["outcome"] == "OK"
    assert fetched["output"]["status"] == 200
    assert fetched["output"]["truncated"] is False
    assert '"body":null' in fetched["output"]["body"].replace(" ", "")
    port = gateway.tools.base_url.rsplit(":", 1)[1]
    refused = await gateway.invoke("http_fetch", {"url": f"http://localhost:{port}/echo"})
    assert refused["outcome"] == "PERMANENT"
    assert refused["message"] == "host 'localhost' is not on http_fetch's allow-list"
    bad = await gateway.invoke("http_fetch", {"url": "ftp://127.0.0.1/x"})
    assert bad["outcome"] == "INVALID_ARGUMENTS"
    assert bad["problems"][0]["path"] == "/url"


async def test_the_audit_names_whom_an_agent_acts_for(gateway: Gateway) -> None:
    t = tenant()
    # RFC 8693: user-42 delegated to the agent, which calls the tool.
    token = gateway.signer.mint(
        subject="user-42", tenant=t, scopes=["tools:call:calculator"], actor_chain=["agent-9"]
    )
    response = await gateway.http.post(
        "/v1/tools/calculator/invoke",
        json={"arguments": {"expression": "1+2"}},
        headers={"Authorization": f"Bearer {token}"},
    )
    result = response.json()
    assert (result["principal"], result["acting_for"]) == ("user-42", ["agent-9"])
    [row] = await gateway.audit(t, count=1)
    assert (row["principal"], row["acting_for"]) == ("user-42", ["agent-9"])


async def test_removing_a_tool_is_announced_and_its_calls_become_unknown(gateway: Gateway) -> None:
    name = unique("retired")
    await gateway.register(gateway.http_tool(name, "/echo"))
    response = await gateway.http.delete(f"/v1/tools/{name}", headers=gateway.admin_headers())
    assert response.status_code == 204
    assert (await gateway.invoke(name, {}))["outcome"] == "UNKNOWN_TOOL"
    again = await gateway.http.delete(f"/v1/tools/{name}", headers=gateway.admin_headers())
    assert again.status_code == 404
    records = await read_records(
        gateway.kafka.bootstrap,
        f"{gateway.kafka.topic_prefix}tools.evt.tool.v1",
        count=2,
        accept=lambda r: json.loads(r.value)["name"] == name,
    )
    assert [json.loads(r.value)["type"] for r in records] == ["registered", "removed"]
    assert json.loads(records[1].value)["changed_by"] == "admin"


async def test_a_call_the_gateway_itself_cannot_finish_leaves_its_key_free(
    gateway: Gateway,
) -> None:
    name = unique("locked")
    await gateway.register(gateway.http_tool(name, "/echo", http={"auth": {"credential": "k"}}))
    assert gateway.app.gateway is not None
    # A credential written with a key this gateway does not hold: the vault cannot open it.
    await gateway.app.gateway.vault._database.execute(
        "INSERT INTO credentials (tool, name, tenant, agent, ciphertext) VALUES ($1, 'k', '', '', $2)",
        name,
        b"not a fernet token",
    )
    key = f"k-{uuid.uuid4().hex[:6]}"
    for _ in range(2):  # the retry meets the same error, not a claim "in flight"
        response = await gateway.http.post(
            f"/v1/tools/{name}/invoke",
            json={"arguments": {}, "idempotency_key": key},
            headers=gateway.headers("acme", [f"tools:call:{name}"]),
        )
        assert response.status_code == 422, response.text
        assert "cannot be decrypted" in response.json()["error"]["message"]


async def test_a_claim_whose_answer_was_lost_is_taken_over_by_the_next_try(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL went away as it committed the claim: the gateway saw an error, the
    key stayed claimed. The command's next try must run the tool, not answer "in
    flight" until the claim's lease runs out."""
    name = unique("booking")
    await gateway.register(gateway.http_tool(name, "/echo", side_effects=True))
    key = f"task-{uuid.uuid4().hex[:6]}:1"
    assert gateway.app.gateway is not None
    calls = gateway.app.gateway.calls
    claim = calls.claim

    async def committed_but_unanswered(**fields: Any) -> Any:
        monkeypatch.setattr(calls, "claim", claim)
        await claim(**fields)
        raise DependencyUnavailable("database: the connection was lost")

    monkeypatch.setattr(calls, "claim", committed_but_unanswered)
    response = await gateway.http.post(
        f"/v1/tools/{name}/invoke",
        json={"arguments": {"seat": "3C"}, "idempotency_key": key},
        headers=gateway.headers("acme", [f"tools:call:{name}"]),
    )
    assert response.status_code == 503, response.text
    assert gateway.tools.by_key.get(key, 0) == 0

    retried = await gateway.invoke(name, {"seat": "3C"}, idempotency_key=key)
    assert retried["outcome"] == "OK", retried
    assert retried["replayed"] is False
    assert gateway.tools.by_key[key] == 1
    assert (await gateway.invoke(name, {"seat": "3C"}, idempotency_key=key))["replayed"] is True
    assert gateway.tools.by_key[key] == 1


async def test_a_result_whose_connection_broke_is_written_once_the_database_answers(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tool has run; writing its result meets a pool connection PostgreSQL ended
    while it sat idle (asyncpg's InternalClientError, seen when PostgreSQL stopped under
    load). The write is tried again rather than failing the call: a failed call would
    leave its claim "in flight", and the next try of its key would get a CONFLICT
    instead of the answer. The tool runs once; the next try replays the answer."""
    name = unique("payment")
    await gateway.register(gateway.http_tool(name, "/echo", side_effects=True))
    key = f"task-{uuid.uuid4().hex[:6]}:1"
    assert gateway.app.gateway is not None
    database = gateway.app.gateway.calls._database
    broken: list[str] = []

    class BreaksOnce:
        """The pool, but the first write of a result meets a connection that broke."""

        def __init__(self, pool: Any) -> None:
            self._pool = pool

        def __getattr__(self, name: str) -> Any:
            return getattr(self._pool, name)

        async def execute(self, query: str, *args: Any, **kwargs: Any) -> Any:
            if query.startswith("WITH audit_row") and not broken:
                broken.append(query)
                raise InternalClientError(
                    "cannot switch to state 15; another operation (2) is in progress"
                )
            return await self._pool.execute(query, *args, **kwargs)

    monkeypatch.setattr(database, "_pool", BreaksOnce(database.pool))
    first = await gateway.invoke(name, {"amount": 5}, idempotency_key=key)
    assert broken, "the result's write did not meet the broken connection"
    assert first["outcome"] == "OK", first
    assert gateway.tools.by_key[key] == 1
    again = await gateway.invoke(name, {"amount": 5}, idempotency_key=key)
    assert (again["outcome"], again["replayed"]) == ("OK", True), again
    assert gateway.tools.by_key[key] == 1
