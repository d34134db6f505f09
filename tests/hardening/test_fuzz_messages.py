"""Property-based fuzzing of every consumed message type through the real bus.

The whole mesh runs on the real broker and PostgreSQL, plus the optional consumers on
instances of their own: an identity service with an SMTP relay configured (its
``identity.email-out`` group) and a memory service with the curator on (``memory.curator``).
For every topic some service consumes, hypothesis draws valid payloads from the
registered payload model and malformed messages of every kind (a field of the wrong type,
a missing required field, bytes that are no JSON, JSON that is no object, a broken
envelope); they are sent at once, and the campaign waits until every consumer group has
committed all of it. Then, per consumer group:

- a valid payload is handled: it never reaches the group's DLQ, unless the group defines
  the refusal (see ``VALID_REFUSALS``);
- a malformed one is in the group's DLQ, as ``invalid``, never retried, with a reason
  that names the problem;
- the sentinel, a valid message on the same partition behind all the junk, is handled:
  no message stalls its partition.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import TYPE_CHECKING

import pytest
import pytest_asyncio

from mainstay_common.settings import HeartbeatSettings
from mainstay_contracts import REGISTRY, Header
from mainstay_execution.testing.mesh import running_mesh
from mainstay_identity.testing import running_identity
from mainstay_memory.settings import CuratorSettings
from mainstay_memory.testing import running_memory

from ._campaign import Campaign, Case, Letter, declared_consumptions, plan_cases, run_campaign

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

pytestmark = [pytest.mark.real, pytest.mark.timeout(300)]

VALID_COUNT = 5
JUNK_PER_KIND = 2
SHUTDOWN_S = 120.0

Refusal = tuple[str, str]
"""A dead letter a valid payload may become: its error type and how its reason starts."""

UNSTORABLE: Refusal = ("InvalidArgument", "database: ")
"""Any group: a value the contract admits but PostgreSQL cannot hold (an integer beyond
the column's range, a NUL character in text) is refused at once, never retried."""
NO_TOKEN: tuple[Refusal, ...] = (("Unauthenticated", ""), ("PermissionDenied", ""))
"""A command that acts with its caller's token: a drawn token is no token identity issued."""

VALID_REFUSALS: dict[str, tuple[Refusal, ...]] = {
    # What else a valid payload may end as in the group's DLQ: the refusals the service
    # defines for a well-formed message it cannot act on. Empty: it is handled (a refusal
    # is an event, e.g. a task or tool call that failed, or nothing to do).
    "execution.agents": (),
    "execution.approvals": (),
    "execution.cancel": (),
    "execution.ledger": (),
    "execution.resume": (),
    "execution.submit": (),
    "execution.tool-calls": (),
    "execution.tools": (),
    "identity.email-out": (),
    "identity.send-mail": NO_TOKEN,
    "ledger.approvals": (),
    # Only execution opens holds; closing or extending one nobody opened is a mistake.
    "ledger.close-hold": (("NotFound", "task_id: no hold for task"),),
    # Drawn holds share task ids ("0"), so one may be closed by a drawn close-hold first.
    "ledger.extend-hold": (
        ("NotFound", "task_id: no hold for task"),
        ("HoldRejected", "task_id: the hold of task"),
    ),
    "ledger.open-hold": (),
    # Usage of an item the price book has no price for cannot be booked.
    "ledger.record-usage": (("NotFound", "item: no price for"),),
    "ledger.task-outcomes": (),
    "memory.curator": (),
    "memory.remember": NO_TOKEN,
    "supervisor.heartbeat": (),
    "supervisor.register-agent": NO_TOKEN,
    "supervisor.task-progress": (),
    # An invocation without a valid token is answered with a failed call event instead.
    "tools.invoke": (),
    "tools.register": NO_TOKEN,
}


def _refused_as_defined(group: str, letter: Letter) -> bool:
    error_type = letter.headers.get(Header.ERROR_TYPE, "")
    return any(
        error_type == kind and letter.reason.startswith(start)
        for kind, start in (UNSTORABLE, *VALID_REFUSALS[group])
    )


CONSUMPTIONS = declared_consumptions()
GROUPS = [c.group for c in CONSUMPTIONS]
OPTIONAL = {"identity.email-out": "mailer", "memory.curator": "curator"}
"""Groups of optional consumers, which run on an instance of their own that has them on."""


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def _curating_memory(
    kafka_bootstrap: str, postgres_dsn: str, home: Path
) -> AsyncIterator[str]:
    """A memory service with the curator on, on a topic prefix of its own (returned).

    Its model provider is a port nothing listens on: the drawn events name no episode
    it has, so the curator never has one to send."""
    async with running_memory(
        kafka_bootstrap,
        postgres_dsn,
        home,
        heartbeat=HeartbeatSettings(interval_s=0),
        curator=CuratorSettings(enabled=True, base_url=f"http://127.0.0.1:{_closed_port()}/v1"),
    ) as memory:
        yield memory.topic_prefix


@pytest.fixture(scope="module")
def cases() -> list[Case]:
    # Drawn before anything runs: generating is CPU-bound and would hold up the event
    # loop the services share.
    return plan_cases(
        {c.topic for c in CONSUMPTIONS}, valid_count=VALID_COUNT, junk_per_kind=JUNK_PER_KIND
    )


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def campaign(
    cases: list[Case],
    kafka_bootstrap: str,
    postgres_dsn: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Campaign]:
    home = tmp_path_factory.mktemp("fuzz-mesh")
    mailer_home = tmp_path_factory.mktemp("fuzz-mailer")
    stack = contextlib.AsyncExitStack()
    try:
        mesh = await stack.enter_async_context(running_mesh(kafka_bootstrap, postgres_dsn, home))
        await stack.enter_async_context(mesh.execution())
        # Nothing listens on the relay's port: a copy that had to go out would fail, and
        # the random deliveries name no principal with an address, so none has to.
        mailer = await stack.enter_async_context(
            running_identity(
                kafka_bootstrap,
                postgres_dsn,
                mailer_home,
                smtp_host="127.0.0.1",
                smtp_port=_closed_port(),
            )
        )
        curator = await stack.enter_async_context(
            _curating_memory(kafka_bootstrap, postgres_dsn, tmp_path_factory.mktemp("fuzz-curator"))
        )
        elsewhere = {"mailer": mailer.kafka.topic_prefix, "curator": curator}
        prefixes = {
            c.group: elsewhere[OPTIONAL[c.group]]
            if c.group in OPTIONAL
            else mesh.kafka.topic_prefix
            for c in CONSUMPTIONS
        }
        yield await run_campaign(kafka_bootstrap, prefixes, CONSUMPTIONS, cases, settle_s=120)
    finally:
        # A shutdown that never ends fails the module instead of holding up the session.
        closing = asyncio.ensure_future(stack.aclose())
        await asyncio.wait([closing], timeout=SHUTDOWN_S)
        if not closing.done():
            pytest.fail(f"the services did not shut down within {SHUTDOWN_S:.0f} s")
        closing.result()


# -- coverage --------------------------------------------------------------------------------


def test_every_consumed_topic_is_fuzzed() -> None:
    consumed = {c.topic for c in CONSUMPTIONS}
    registered = {spec.name for spec in REGISTRY}
    assert consumed <= registered, f"consumed but not registered: {consumed - registered}"
    assert set(VALID_REFUSALS) == set(GROUPS), (
        "decide for each consumer group what a valid payload may end as: "
        f"missing {sorted(set(GROUPS) - set(VALID_REFUSALS))}, "
        f"stale {sorted(set(VALID_REFUSALS) - set(GROUPS))}"
    )


def test_every_consumed_topic_gets_every_kind_of_message(cases: list[Case]) -> None:
    kinds: dict[str, set[str]] = {}
    for case in cases:
        kinds.setdefault(case.topic, set()).add(case.kind)
    for consumption in CONSUMPTIONS:
        spec = REGISTRY.get(consumption.topic)
        wanted = {"valid", "sentinel", "wrong-type", "not-json", "not-an-object", "bad-envelope"}
        if spec.payload.model_json_schema().get("required"):
            wanted.add("missing-field")
        assert kinds.get(consumption.topic, set()) >= wanted, consumption.topic


# -- through the bus ------------------------------------------------------------------------


def test_every_group_took_everything_it_was_sent(campaign: Campaign) -> None:
    assert campaign.settled, f"groups with uncommitted messages: {campaign.lagging}"


@pytest.mark.parametrize("group", GROUPS)
def test_valid_payloads_are_handled(campaign: Campaign, group: str) -> None:
    consumption = next(c for c in CONSUMPTIONS if c.group == group)
    refused = []
    for case in campaign.cases_of(consumption.topic, "valid", "sentinel"):
        letter = campaign.letter_of(group, case)
        if letter is None:
            continue
        headers = letter.headers
        got = (headers.get(Header.ERROR_CLASS), headers.get(Header.ATTEMPTS))
        # A defined refusal is permanent: dead-lettered at the first attempt, never retried.
        if not _refused_as_defined(group, letter) or got != ("permanent", "1"):
            refused.append(
                f"{case.describe()}\n    -> {headers.get(Header.ERROR_TYPE)} {got}: {letter.reason}"
            )
    assert not refused, f"{group} dead-lettered valid payloads:\n" + "\n".join(refused)


@pytest.mark.parametrize("group", GROUPS)
def test_no_dead_letter_comes_from_elsewhere(campaign: Campaign, group: str) -> None:
    """What the services publish in turn, when they handle the fuzz, must be valid too."""
    strays = [
        f"{x.headers.get(Header.ERROR_TYPE)}: {x.reason} (value {x.value!r:.300})"
        for x in campaign.letters[group]
        if x.case is None
    ]
    assert not strays, f"{group} dead-lettered messages the services sent:\n" + "\n".join(strays)


@pytest.mark.parametrize("group", GROUPS)
def test_malformed_messages_are_dead_lettered_with_the_reason(
    campaign: Campaign, group: str
) -> None:
    consumption = next(c for c in CONSUMPTIONS if c.group == group)
    junk = [c for c in campaign.cases_of(consumption.topic) if c.reason]
    assert junk
    problems = []
    for case in junk:
        letter = campaign.letter_of(group, case)
        if letter is None:
            problems.append(f"{case.describe()}\n    -> not dead-lettered")
            continue
        headers = letter.headers
        got = (
            headers.get(Header.ERROR_CLASS),
            headers.get(Header.ERROR_TYPE),
            headers.get(Header.ATTEMPTS),
        )
        missing = [part for part in case.reason if part not in letter.reason]
        if got != ("invalid", "InvalidMessage", "1") or missing:
            problems.append(f"{case.describe()}\n    -> {got} {letter.reason!r}, lacks {missing}")
        assert letter.value == case.value, "a dead letter keeps the original value"
    assert not problems, f"{group}:\n" + "\n".join(problems)


@pytest.mark.parametrize("group", GROUPS)
def test_the_sentinel_behind_the_junk_is_handled(campaign: Campaign, group: str) -> None:
    consumption = next(c for c in CONSUMPTIONS if c.group == group)
    prefix = campaign.prefixes[group]
    [sentinel] = campaign.cases_of(consumption.topic, "sentinel")
    junk = [c for c in campaign.cases_of(consumption.topic) if c.reason]
    partition, offset = sentinel.sent[prefix]
    assert all(c.sent[prefix][0] == partition and c.sent[prefix][1] < offset for c in junk)
    committed = {tp.partition: n for tp, n in campaign.committed[group].items()}
    assert committed.get(partition, 0) > offset, (
        f"{group} did not get past the sentinel at offset {offset} of partition {partition}"
    )
    letter = campaign.letter_of(group, sentinel)
    assert letter is None or _refused_as_defined(group, letter), letter
