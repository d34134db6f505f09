"""``mainstay agents``, ``mainstay dlq`` and ``mainstay fleet`` against the running mesh:
registering and reading agents, triaging real dead letters, and the fleet view.

Each command runs as a process, as a user would run it; what the tests wait for
(a dead letter arriving, the fleet view catching up) is polled over HTTP, and the
command runs once it is there.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from typing import TYPE_CHECKING, Any

import pytest
from aiokafka import AIOKafkaProducer

from mainstay_common.bus import dlq_topic, group_id
from mainstay_common.heartbeat import Heartbeats
from mainstay_common.lifecycle import within
from mainstay_contracts import Header
from mainstay_contracts.supervisor import REGISTER_AGENT

from .conftest import CliResult, cli_environment, token_of

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from pathlib import Path

    from .conftest import Cli, FullMesh

pytestmark = [pytest.mark.real, pytest.mark.timeout(300)]

TRIAGE_SCOPES = ["supervisor:dlq:read", "supervisor:dlq:admin", "*"]
"""What dead-letter triage needs: a DLQ mixes every tenant's messages."""


def new_agent() -> str:
    return f"cli-{uuid.uuid4().hex[:8]}"


def definition(mesh: FullMesh, name: str, **fields: Any) -> dict[str, Any]:
    return {
        "identity": name,
        "models": [
            mesh.models.model_ref("openai", "primary").model_dump(mode="json", exclude_none=True),
            mesh.models.model_ref("anthropic", "backup").model_dump(mode="json", exclude_none=True),
        ],
        "escalation": ["alice"],
        **fields,
    }


def ok(result: CliResult) -> CliResult:
    assert result.code == 0, f"exit {result.code}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    return result


def parsed(result: CliResult) -> Any:
    return json.loads(ok(result).stdout)


def refused(result: CliResult, *fragments: str) -> None:
    """The command failed with exit code 1 and one line on stderr holding ``fragments``."""
    assert result.code == 1, f"exit {result.code}\nstdout: {result.stdout}"
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr


async def eventually(attempt: Callable[[], Awaitable[Any]], what: str, wait_s: float = 60) -> Any:
    """The first truthy answer of ``attempt``, polled until ``wait_s`` runs out."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    while True:
        answer = await attempt()
        if answer:
            return answer
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


async def cli_with_input(mesh: FullMesh, text: str, *args: str) -> CliResult:
    """``mainstay`` as the operator, with ``text`` on its standard input."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mainstay_client.cli",
        *args,
        env=cli_environment(mesh, await token_of(mesh, "operator")),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await within(process.communicate(text.encode()), 180)
    assert process.returncode is not None
    return CliResult(process.returncode, stdout.decode(), stderr.decode())


async def triage_token(mesh: FullMesh) -> str:
    """A token of a principal of the tenant that may triage dead letters."""
    secret = await mesh.identity.register(mesh.tenant, "triage", TRIAGE_SCOPES, kind="service")
    answer = await mesh.identity.token(f"{mesh.tenant}/triage", secret)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["access_token"])


async def supervisor_get(mesh: FullMesh, path: str, token: str, **params: Any) -> Any:
    answer = await mesh.http.get(
        f"{mesh.supervisor_url}{path}",
        params=params,
        headers={"Authorization": f"Bearer {token}"},
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


# -- agents --------------------------------------------------------------------------------


async def test_an_agent_is_registered_from_a_file_then_listed_and_shown(
    cli: Cli, mesh: FullMesh, tmp_path: Path
) -> None:
    name = new_agent()
    file = tmp_path / "agent.json"
    file.write_text(json.dumps(definition(mesh, name, description="drafts replies")))

    record = parsed(await cli("agents", "register", name, "--file", str(file), "--json"))
    assert record["name"] == name
    assert record["tenant"] == mesh.tenant
    assert record["version"] == 1
    assert record["quarantined"] is False
    assert record["definition"]["description"] == "drafts replies"
    assert [m["model"] for m in record["definition"]["models"]] == ["primary", "backup"]

    # A changed definition, from standard input, is the next version; the table says so.
    changed = json.dumps(definition(mesh, name, description="drafts shorter replies"))
    table = ok(await cli_with_input(mesh, changed, "agents", "register", name, "-f", "-")).stdout
    assert name in table
    assert "latest_version" in table
    assert "openai/primary, anthropic/backup" in table

    listed, listing, shown, first, detail = await asyncio.gather(
        cli("agents", "list", "--json"),
        cli("agents", "list"),
        cli("agents", "show", name, "--json"),
        cli("agents", "show", name, "--version", "1", "--json"),
        cli("agents", "show", name, "--tenant", mesh.tenant),
    )
    [entry] = [agent for agent in parsed(listed)["agents"] if agent["name"] == name]
    assert entry["version"] == 2
    assert entry["definition"]["description"] == "drafts shorter replies"
    assert "writer" in {agent["name"] for agent in parsed(listed)["agents"]}
    table = ok(listing).stdout
    assert name in table
    assert "writer" in table
    assert "active" in table

    record = parsed(shown)
    assert (record["name"], record["version"], record["latest_version"]) == (name, 2, 2)
    assert parsed(first)["definition"]["description"] == "drafts replies"
    table = ok(detail).stdout
    assert name in table
    assert "drafts shorter replies" in table


async def test_agent_commands_fail_with_one_line_naming_the_problem(
    cli: Cli, mesh: FullMesh, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"identity": "x", ')
    invalid = tmp_path / "invalid.json"
    invalid.write_text(json.dumps({"identity": "x", "models": []}))
    unknown, bad_file, bad_definition, not_admin, no_token = await asyncio.gather(
        cli("agents", "show", "nobody-here"),
        cli("agents", "register", new_agent(), "--file", str(broken)),
        cli("agents", "register", new_agent(), "--file", str(invalid)),
        cli("agents", "register", new_agent(), "--file", str(invalid), who="alice"),
        cli("agents", "list", env={"MAINSTAY_TOKEN": ""}),
    )
    refused(unknown, "404", "nobody-here", mesh.tenant)  # the supervisor's reason
    refused(bad_file, str(broken), "not valid JSON")
    refused(bad_definition, "400", "models")
    refused(not_admin, "403", "supervisor:admin")
    refused(no_token, "MAINSTAY_TOKEN")


# -- dead letters ---------------------------------------------------------------------------


async def test_dead_letters_are_listed_shown_replayed_and_purged(cli: Cli, mesh: FullMesh) -> None:
    prefix = mesh.kafka.topic_prefix
    origin = f"{prefix}{REGISTER_AGENT.name}"
    topic = dlq_topic(group_id("supervisor", "register-agent", prefix=prefix))
    token = await triage_token(mesh)
    triage = {"MAINSTAY_TOKEN": token}

    # Two messages the supervisor cannot parse go straight to its DLQ.
    ids = [f"cli-{uuid.uuid4()}", f"cli-{uuid.uuid4()}"]
    producer = AIOKafkaProducer(bootstrap_servers=mesh.kafka.bootstrap)
    await producer.start()
    try:
        for ce_id in ids:
            await producer.send_and_wait(
                origin,
                b"\x00\xffnot json",
                key=ce_id.encode(),
                headers=[(Header.ID, ce_id.encode())],
            )
    finally:
        await producer.stop()

    async def arrived() -> bool:
        answer = await supervisor_get(mesh, f"/v1/dlq/{topic}/letters", token, limit=500)
        return {letter["ce_id"] for letter in answer["letters"]} >= set(ids)

    await eventually(arrived, f"two dead letters on {topic}")

    listed, listing, letters, table, operator = await asyncio.gather(
        cli("dlq", "list", "--json", env=triage),
        cli("dlq", "list", env=triage),
        cli("dlq", "show", topic, "--limit", "500", "--json", env=triage),
        cli("dlq", "show", topic, env=triage),
        cli("dlq", "list"),
    )
    [entry] = [d for d in parsed(listed)["dlqs"] if d["topic"] == topic]
    assert entry["pending"] >= 2
    assert entry["total"] == entry["pending"] + entry["replayed"] + entry["purged"]
    assert topic in ok(listing).stdout
    mine = {s["ce_id"]: s for s in parsed(letters)["letters"] if s["ce_id"] in ids}
    replayed, purged = (mine[ce_id] for ce_id in ids)
    assert replayed["status"] == "pending"
    assert replayed["origin_topic"] == origin
    assert replayed["error"]["class"]
    assert topic in ok(table).stdout
    assert origin in table.stdout
    # Operators of one tenant cannot read dead letters: they cross tenants.
    refused(operator, "403", "supervisor:dlq:read")

    where = ["--partition", str(purged["partition"]), "--offset", str(purged["offset"])]
    at = ["--partition", str(replayed["partition"]), "--offset", str(replayed["offset"])]
    detail, table, done, unconfirmed = await asyncio.gather(
        cli("dlq", "show", topic, *where, "--json", env=triage),
        cli("dlq", "show", topic, *where, env=triage),
        cli("dlq", "replay", topic, *at, "--reason", "retry", "--json", env=triage),
        cli("dlq", "purge", topic, *where, "--reason", "junk", env=triage),
    )
    letter = parsed(detail)
    assert letter["ce_id"] == ids[1]
    assert letter["payload_encoding"] == "base64"
    assert letter["origin"]["topic"] == origin
    assert letter["status"] == "pending"
    assert ids[1] in ok(table).stdout
    assert "base64" in table.stdout
    answer = parsed(done)
    assert answer["status"] == "replayed"
    assert answer["origin_topic"] == origin
    refused(unconfirmed, "--yes")  # purging needs --yes, and nothing was purged
    answer = await supervisor_get(mesh, f"/v1/dlq/{topic}/letters/{where[1]}/{where[3]}", token)
    assert answer["status"] == "pending"

    # The replayed letter went back to the supervisor, failed again, and came back.
    async def failed_again() -> bool:
        answer = await supervisor_get(mesh, f"/v1/dlq/{topic}/letters", token, limit=500)
        return any(letter["replay_of"] == ids[0] for letter in answer["letters"])

    await eventually(failed_again, "the replayed letter to be dead-lettered again")

    again, gone = await asyncio.gather(
        cli("dlq", "replay", topic, *at, env=triage),
        cli("dlq", "purge", topic, *where, "--reason", "junk", "--yes", "--json", env=triage),
    )
    refused(again, "409", "already replayed")
    assert parsed(gone)["status"] == "purged"

    after, pending = await asyncio.gather(
        cli("dlq", "show", topic, *where, "--json", env=triage),
        cli("dlq", "show", topic, "--limit", "500", "--json", env=triage),
    )
    letter = parsed(after)
    assert letter["status"] == "purged"
    assert letter["action"]["reason"] == "junk"
    assert ids[1] not in {s["ce_id"] for s in parsed(pending)["letters"]}


async def test_dlq_commands_refuse_what_names_no_letter(cli: Cli, mesh: FullMesh) -> None:
    triage = {"MAINSTAY_TOKEN": await triage_token(mesh)}
    unknown = f"{mesh.kafka.topic_prefix}nobody.work.dlq"
    missing, vague, half = await asyncio.gather(
        cli("dlq", "show", unknown, env=triage),
        cli("dlq", "purge", unknown, "--reason", "junk", "--yes", env=triage),
        cli("dlq", "replay", unknown, "--partition", "0", env=triage),
    )
    refused(missing, "404", unknown)
    refused(vague, "--partition", "--all")
    refused(half, "--offset")


# -- fleet ------------------------------------------------------------------------------------


async def test_the_fleet_shows_executions_instance_and_groups(cli: Cli, mesh: FullMesh) -> None:
    [app] = mesh.apps
    instance = app.settings.instance_id
    token = await token_of(mesh, "operator")
    # The mesh runs with heartbeats off; this instance sends its own for the test.
    async with Heartbeats(app.bus, service="execution", instance=instance, interval_s=1.0):

        async def execution_seen() -> bool:
            view = await supervisor_get(mesh, "/fleet", token)
            listed = any(i["instance"] == instance for i in view["instances"])
            return listed and any(g["service"] == "execution" for g in view["groups"])

        await eventually(execution_seen, "execution in the fleet view")
        status, table = await asyncio.gather(
            cli("fleet", "status", "--json"), cli("fleet", "status")
        )

    view = parsed(status)
    [entry] = [i for i in view["instances"] if i["instance"] == instance]
    assert entry["service"] == "execution"
    assert entry["status"] == "up"
    groups = [g for g in view["groups"] if g["service"] == "execution"]
    assert groups
    assert all(g["group"].startswith(f"{mesh.kafka.topic_prefix}execution.") for g in groups)
    assert all(isinstance(g["lag"], int) for g in groups)
    assert isinstance(view["scaling"], list)
    assert isinstance(view["dead_letters"], dict)

    text = ok(table).stdout
    assert instance in text
    assert groups[0]["group"] in text
    for title in ("instances", "consumer groups", "dead letters", "scaling"):
        assert title in text
