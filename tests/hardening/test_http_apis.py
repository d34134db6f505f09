"""Every HTTP API against its own OpenAPI document, with requests schemathesis generates.

Each service runs on loopback against the real broker and PostgreSQL. For every
operation its document lists, generated requests (valid ones and ones that break
the schema) go out three ways: with a token holding every scope of the service
(so they reach the handlers), with no token, and with a garbage token. Whatever
comes back must not be a 5xx, and every 4xx must carry the Mainstay error shape
with a message that names the problem.

Generation is derandomized and the example counts are small, so a run is the
same every time and stays quick; the problems found are collected per operation
and reported together rather than shrunk one at a time.
"""

from __future__ import annotations

import asyncio
import functools
import json
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import pytest_asyncio
import requests
import schemathesis
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis.core.result import Ok

from ._apis import (
    ALL_SERVICES,
    TENANT,
    Operator,
    RunningService,
    error_problem,
    explore,
    running_services,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

pytestmark = [
    pytest.mark.real,
    # Generation runs in a worker thread while the services, on the event loop, use the
    # random module (retry jitter): hypothesis sees the global state move and warns.
    pytest.mark.filterwarnings(
        "ignore:Do not use the `random` module inside strategies"
        ":hypothesis.errors.HypothesisDeprecationWarning"
    ),
]

# Examples per operation and way of calling it: enough to reach every branch of
# input validation, few enough that the whole module runs in about a minute.
_VALID_AUTH_EXAMPLES = 8
_NO_AUTH_EXAMPLES = 3
_REQUEST_TIMEOUT_S = 30.0
_DEPENDENCY_STATUSES = {503, 504}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def services(
    kafka_bootstrap: str, postgres_dsn: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[Operator, dict[str, RunningService]]]:
    operator = Operator.create(tmp_path_factory.mktemp("http-apis"))
    async with running_services(kafka_bootstrap, postgres_dsn, operator) as running:
        yield operator, running


async def _schema(service: RunningService) -> schemathesis.BaseSchema:
    async with httpx.AsyncClient(base_url=service.base_url, timeout=_REQUEST_TIMEOUT_S) as http:
        document = (await http.get("/openapi.json")).raise_for_status().json()
    return schemathesis.openapi.from_dict(document)


def _judge(case: Any, response: Any) -> str | None:
    """None when the answer is acceptable; else what is wrong with it."""
    status = int(response.status_code)
    if status < 400:
        return None
    content_type = (response.headers.get("content-type") or [""])[0]
    if status in _DEPENDENCY_STATUSES:
        # The documented answer when a server the caller named (an MCP server to import)
        # cannot be reached: allowed, if it says which and why.
        problem = error_problem(status, response.content, content_type)
        kind = _error_type(response.content)
        if problem is None and kind in {"DependencyUnavailable", "DependencyTimeout"}:
            return None
    if status >= 500:
        return f"{status}: {response.content[:300]!r}"
    return error_problem(status, response.content, content_type)


def _error_type(body: bytes) -> str | None:
    try:
        error = json.loads(body).get("error")
    except (ValueError, AttributeError):
        return None
    return error.get("type") if isinstance(error, dict) else None


def _valid_path(operation: Any) -> dict[str, str]:
    """A valid value for each path parameter: the caller's tenant, else a plain id."""
    values = {}
    for parameter in operation.path_parameters:
        kind = parameter.definition.get("schema", {}).get("type")
        values[parameter.name] = (
            TENANT if parameter.name == "tenant" else "0" if kind == "integer" else "x-1"
        )
    return values


def _strategies(operation: Any, mode: schemathesis.GenerationMode, *, pin_tenant: bool) -> Any:
    if mode is schemathesis.GenerationMode.NEGATIVE:
        # Path parameters held valid: the request breaks its query or body (and negating
        # a free-form path string is mostly rejected draws).
        return operation.as_strategy(generation_mode=mode, path_parameters=_valid_path(operation))
    strategies = [operation.as_strategy(generation_mode=mode)]
    if pin_tenant and any(p.name == "tenant" for p in operation.path_parameters):
        # Half the requests name the caller's own tenant, so they get past the tenant
        # check into the handler itself.
        strategies.append(
            operation.as_strategy(generation_mode=mode, path_parameters={"tenant": TENANT})
        )
    return st.one_of(strategies)


def _send_examples(
    strategy: Any,
    *,
    label: str,
    base_url: str,
    session: requests.Session,
    headers: Callable[[], dict[str, str]],
    examples: int,
    problems: dict[str, str],
) -> int:
    """Sends ``examples`` requests drawn from ``strategy``; the first problem goes to
    ``problems[label]``. Returns how many got an answer."""
    sent = 0

    @explore(examples)
    @given(case=strategy)
    def send(case: Any) -> None:
        nonlocal sent
        try:
            response = case.call(
                base_url=base_url, session=session, headers=headers(), timeout=_REQUEST_TIMEOUT_S
            )
        except requests.RequestException as exc:
            problems.setdefault(label, f"no answer: {exc!r}")
            return
        sent += 1
        problem = _judge(case, response)
        if problem is not None:
            curl = case.as_curl_command(headers=headers())
            problems.setdefault(label, f"{problem}\n    request: {curl}")

    send()
    return sent


def _explore(
    schema: schemathesis.BaseSchema,
    base_url: str,
    *,
    headers: Callable[[], dict[str, str]],
    modes: tuple[schemathesis.GenerationMode, ...],
    examples: int,
    pin_tenant: bool,
) -> tuple[int, dict[str, str]]:
    """Send generated requests for every operation; (requests sent, problem by operation)."""
    problems: dict[str, str] = {}
    sent = 0
    with requests.Session() as session:
        for result in schema.get_all_operations():
            assert isinstance(result, Ok), result
            operation = result.ok()
            for mode in modes:
                try:
                    sent += _send_examples(
                        _strategies(operation, mode, pin_tenant=pin_tenant),
                        label=operation.label,
                        base_url=base_url,
                        session=session,
                        headers=headers,
                        examples=examples,
                        problems=problems,
                    )
                except Unsatisfiable:
                    # Nothing in this operation can break its schema (no parameters, no
                    # body): there are no negative requests to send.
                    assert mode is schemathesis.GenerationMode.NEGATIVE, operation.label
    return sent, problems


def _report(service: str, problems: dict[str, str]) -> str:
    lines = [f"{service}: {len(problems)} operation(s) answered badly:"]
    lines += [f"  {label}: {problem}" for label, problem in sorted(problems.items())]
    return "\n".join(lines)


@pytest.mark.timeout(240)
@pytest.mark.parametrize("name", ALL_SERVICES)
async def test_generated_requests_get_no_5xx_and_every_rejection_names_its_problem(
    services: tuple[Operator, dict[str, RunningService]], name: str
) -> None:
    operator, running = services
    service = running[name]
    schema = await _schema(service)
    operations = [result for result in schema.get_all_operations() if isinstance(result, Ok)]
    explore = functools.partial(_explore, schema, service.base_url)

    def authorised() -> dict[str, str]:
        return operator.headers(service.scopes)

    # Runs in a worker thread: the services answer on this test's event loop.
    sent, problems = await asyncio.to_thread(
        explore,
        headers=authorised,
        modes=(schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE),
        examples=_VALID_AUTH_EXAMPLES,
        pin_tenant=True,
    )
    for label, token in (("no token", None), ("garbage token", "Bearer not.a.jwt")):
        more, found = await asyncio.to_thread(
            explore,
            headers=(lambda t=token: {} if t is None else {"Authorization": t}),
            modes=(schemathesis.GenerationMode.POSITIVE,),
            examples=_NO_AUTH_EXAMPLES,
            pin_tenant=False,
        )
        sent += more
        problems.update({f"{op} ({label})": text for op, text in found.items()})

    print(f"{name}: {len(operations)} operations, {sent} generated requests")
    assert sent >= len(operations), "every documented operation was called"
    assert not problems, _report(name, problems)


_PROBE_REQUESTS: tuple[tuple[str, str, bytes | None], ...] = (
    ("GET", "/healthz", None),
    ("GET", "/readyz", None),
    ("GET", "/metrics", None),
    ("GET", "/openapi.json", None),
    ("POST", "/healthz", b"{}"),
    ("DELETE", "/readyz", None),
    ("GET", "/no/such/route", None),
    ("GET", "/%ff%fe", None),
    ("PATCH", "/v1/" + "x" * 4000, b"{"),
)


@pytest.mark.parametrize("name", ALL_SERVICES)
async def test_probes_and_unknown_routes_answer_in_the_error_shape(
    services: tuple[Operator, dict[str, RunningService]], name: str
) -> None:
    """What every service serves besides its documented API: the probes answer, and
    anything else is a named 404/405, never a 5xx."""
    _, running = services
    problems: list[str] = []
    async with httpx.AsyncClient(
        base_url=running[name].base_url, timeout=_REQUEST_TIMEOUT_S
    ) as http:
        for method, path, body in _PROBE_REQUESTS:
            response = await http.request(
                method, path, content=body, headers={"content-type": "application/json"}
            )
            if path in {"/healthz", "/readyz", "/metrics", "/openapi.json"} and method == "GET":
                if response.status_code != 200:
                    problems.append(f"{method} {path}: {response.status_code} {response.text}")
                continue
            problem = (
                f"{response.status_code}: {response.text[:300]}"
                if response.status_code >= 500 or response.status_code < 400
                else error_problem(
                    response.status_code,
                    response.content,
                    response.headers.get("content-type", ""),
                )
            )
            if problem is not None:
                problems.append(f"{method} {path[:60]}: {problem}")
    assert not problems, "\n".join(problems)
