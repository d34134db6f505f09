"""The agent registry over HTTP and Kafka: validation, versions, the compacted agent topic."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest

from mainstay_contracts.supervisor import AGENT_EVENTS, REGISTER_AGENT, RegisterAgentCommand

from .conftest import new_tenant

if TYPE_CHECKING:
    from .conftest import Supervisor

pytestmark = pytest.mark.real

PLANNER_YAML = """
identity: planner
description: plans trips
models:
  - {provider: openai, model: gpt-4o}
  - {provider: anthropic, model: claude-sonnet, timeout_s: 30}
system_prompt: You plan trips.
tools: [search, calculator]
limits: {max_steps: 12, max_cost_micros: 500000, step_timeout_s: 60}
escalation: [hana]
strategy: {on_stuck: resume, max_restarts: 2, period_s: 600}
"""


async def put_agent(
    supervisor: Supervisor, tenant: str, name: str, body: str, content_type: str
) -> Any:
    return await supervisor.http.put(
        f"/v1/tenants/{tenant}/agents/{name}",
        content=body,
        headers={**supervisor.headers(tenant), "Content-Type": content_type},
    )


async def test_definitions_are_versioned_and_a_repeat_changes_nothing(
    supervisor: Supervisor,
) -> None:
    tenant = new_tenant()
    first = await put_agent(supervisor, tenant, "planner", PLANNER_YAML, "application/yaml")
    assert first.status_code == 201, first.text
    assert first.json()["version"] == 1
    assert first.json()["definition"]["models"][1]["model"] == "claude-sonnet"
    again = await put_agent(supervisor, tenant, "planner", PLANNER_YAML, "application/yaml")
    assert (again.status_code, again.json()["version"]) == (200, 1)
    changed = PLANNER_YAML.replace("max_steps: 12", "max_steps: 30")
    second = await put_agent(supervisor, tenant, "planner", changed, "application/yaml")
    assert (second.status_code, second.json()["version"]) == (201, 2)
    headers = supervisor.headers(tenant, ("supervisor:read",))
    latest = await supervisor.http.get(f"/v1/tenants/{tenant}/agents/planner", headers=headers)
    assert latest.json()["definition"]["limits"]["max_steps"] == 30
    # a task that started on version 1 still finds it
    old = await supervisor.http.get(
        f"/v1/tenants/{tenant}/agents/planner/versions/1", headers=headers
    )
    assert old.json()["definition"]["limits"]["max_steps"] == 12
    listed = await supervisor.http.get(f"/v1/tenants/{tenant}/agents", headers=headers)
    assert [(a["name"], a["version"]) for a in listed.json()["agents"]] == [("planner", 2)]
    # each version is on the compacted topic, keyed by tenant/name
    events = await supervisor.records(
        AGENT_EVENTS, 2, lambda r: json.loads(r.value)["tenant"] == tenant
    )
    assert [json.loads(r.value)["version"] for r in events] == [1, 2]
    assert {r.key for r in events} == {f"{tenant}/planner".encode()}


@pytest.mark.parametrize(
    ("body", "content_type", "named"),
    [
        ("identity: p\nmodels: []\n", "application/yaml", "models"),
        ("identity: p\nmodels: [{provider: bard, model: x}]\n", "application/yaml", "provider"),
        (
            "identity: p\nmodels: [{provider: openai, model: m}]\nlimits: {max_steps: 0}\n",
            "application/yaml",
            "limits.max_steps",
        ),
        (
            '{"identity": "p", "models": [{"provider": "openai", "model": "m"}],'
            ' "tools": ["a", "a"]}',
            "application/json",
            "tools",
        ),
        ("identity: [unclosed", "application/yaml", "not valid YAML"),
        ('{"identity": "p", "name": "other", "models": []}', "application/json", "name"),
        ("- a list\n", "application/yaml", "mapping"),
    ],
)
async def test_a_bad_definition_is_refused_naming_what_is_wrong(
    supervisor: Supervisor, body: str, content_type: str, named: str
) -> None:
    tenant = new_tenant()
    answer = await put_agent(supervisor, tenant, "planner", body, content_type)
    assert answer.status_code == 400, answer.text
    assert named in answer.text
    missing = await supervisor.http.get(
        f"/v1/tenants/{tenant}/agents/planner", headers=supervisor.headers(tenant)
    )
    assert missing.status_code == 404


async def test_registering_needs_the_admin_scope_in_the_tenant(supervisor: Supervisor) -> None:
    tenant = new_tenant()
    path = f"/v1/tenants/{tenant}/agents/planner"
    yaml_body = {"content": PLANNER_YAML}
    assert (await supervisor.http.put(path, **yaml_body)).status_code == 401
    reader = supervisor.headers(tenant, ("supervisor:read",))
    assert (await supervisor.http.put(path, headers=reader, **yaml_body)).status_code == 403
    other = supervisor.headers("another", ("supervisor:admin",))
    answer = await supervisor.http.put(path, headers=other, **yaml_body)
    assert answer.status_code == 403
    assert "another tenant" in answer.text


async def test_an_agent_registered_over_kafka_is_announced(supervisor: Supervisor) -> None:
    tenant = new_tenant()
    command = RegisterAgentCommand(
        name="writer",
        tenant=tenant,
        identity="writer",
        models=[{"provider": "openai", "model": "gpt-4o-mini"}],
        token=supervisor.token(tenant),
    )
    await supervisor.bus.publish(REGISTER_AGENT, command)
    [event] = await supervisor.records(
        AGENT_EVENTS, 1, lambda r: json.loads(r.value)["tenant"] == tenant
    )
    payload = json.loads(event.value)
    assert (payload["type"], payload["name"], payload["version"]) == (
        "agent.registered",
        "writer",
        1,
    )
    assert "token" not in payload["definition"]
