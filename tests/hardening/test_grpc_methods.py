"""Every method of ``mainstay.memory.v1.MemoryService`` with requests hypothesis builds
from the protobuf descriptors.

Requests are made field by field from each method's input descriptor: valid-looking
values (the caller's own tenant and agents), garbage (out-of-range numbers, unknown
enum values, timestamps far outside the calendar, NUL characters), and strings far
longer than any field allows. Raw wire bytes go out too: a string field holding
invalid UTF-8, and bytes that are no protobuf at all. Whatever the request, the
server must answer a status other than INTERNAL/UNKNOWN, and every error status
must carry details that name the problem.

The methods come from the service descriptor; each needs an entry in
``_SEEDS`` (a valid request that reaches the handler), so a new method fails
here until it is covered.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, cast

import grpc
import grpc.aio
import pytest
import pytest_asyncio
from google.protobuf import descriptor
from google.protobuf.message_factory import GetMessageClass
from hypothesis import given
from hypothesis import strategies as st

from mainstay.memory.v1 import memory_pb2 as pb
from mainstay_common.grpc import create_channel
from mainstay_memory.app import MemoryApp

from ._apis import TENANT, Operator, RunningService, explore, running_services

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from google.protobuf.message import Message

pytestmark = [
    pytest.mark.real,
    # A failing example with a multi-megabyte string is reported in full otherwise.
    pytest.mark.filterwarnings("ignore:Generating overly large repr"),
    # Generation runs in a worker thread while the service, on the event loop, uses the
    # random module (retry jitter): hypothesis sees the global state move and warns.
    pytest.mark.filterwarnings(
        "ignore:Do not use the `random` module inside strategies"
        ":hypothesis.errors.HypothesisDeprecationWarning"
    ),
]

SERVICE = pb.DESCRIPTOR.services_by_name["MemoryService"]
_EXAMPLES = 40
_RAW_EXAMPLES = 15
_CALL_TIMEOUT_S = 30.0
_BAD_STATUSES = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS}

# One request per method that the handler accepts: generated requests start from it
# (some fields replaced) as often as from nothing, so they get past the first check.
_SEEDS: dict[str, Message] = {
    "Remember": pb.RememberRequest(
        scope=pb.Scope(tenant=TENANT, agent_id="agent-1"),
        kind=pb.KIND_FACT,
        content="the user lives in Lisbon",
        subject="user.home_city",
    ),
    "Recall": pb.RecallRequest(scope=pb.Scope(tenant=TENANT, agent_id="agent-1"), query="home"),
    "Get": pb.GetRequest(id="00000000-0000-0000-0000-000000000000"),
    "History": pb.HistoryRequest(
        scope=pb.Scope(tenant=TENANT, agent_id="agent-1"), subject="user.home_city"
    ),
    "Forget": pb.ForgetRequest(
        scope=pb.Scope(tenant=TENANT, agent_id="agent-1"), subject="user.nothing"
    ),
}

_WORDS = ["", " ", TENANT, "agent-1", "user-1", "user.home_city", "other-tenant", "*", "shared"]
_HUGE = st.sampled_from([40_000, 300_000, 2_000_000]).map(lambda n: "é" * n)
_STRINGS = st.one_of(
    st.sampled_from(_WORDS),
    st.text(max_size=60),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=20).map(
        lambda s: s + "\x00"
    ),
    _HUGE,
)
_INT32 = st.one_of(st.integers(-(2**31), 2**31 - 1), st.sampled_from([0, 1, -1, 2**31 - 1]))
_INT64 = st.one_of(
    st.integers(-(2**63), 2**63 - 1), st.sampled_from([0, 1, -1, 2**63 - 1, -(2**63)])
)
_FLOATS = st.floats(width=32)


def _scalar(field: descriptor.FieldDescriptor) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind == descriptor.FieldDescriptor.TYPE_STRING:
        return _STRINGS
    if kind == descriptor.FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=200)
    if kind == descriptor.FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind in {descriptor.FieldDescriptor.TYPE_FLOAT, descriptor.FieldDescriptor.TYPE_DOUBLE}:
        return _FLOATS
    if kind in {descriptor.FieldDescriptor.TYPE_INT64, descriptor.FieldDescriptor.TYPE_SINT64}:
        return _INT64
    if kind == descriptor.FieldDescriptor.TYPE_ENUM:
        # proto3 enums are open: any int32 arrives, named or not.
        assert field.enum_type is not None
        known = [value.number for value in field.enum_type.values]
        return st.one_of(st.sampled_from(known), _INT32)
    if kind in {descriptor.FieldDescriptor.TYPE_INT32, descriptor.FieldDescriptor.TYPE_SINT32}:
        return _INT32
    raise AssertionError(f"no strategy for {field.full_name} (type {kind}); add one")


def _value(field: descriptor.FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    """Anything the type of ``field`` allows: a dict for a map, a list when repeated."""
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        value_field = field.message_type.fields_by_name["value"]
        return st.dictionaries(_STRINGS, _scalar(value_field), max_size=4)
    single = (
        _message(field.message_type, depth + 1)
        if field.message_type is not None
        else _scalar(field)
    )
    return st.lists(single, max_size=4) if _is_repeated(field) else single


def _assign(message: Message, field: descriptor.FieldDescriptor, value: Any) -> None:
    slot = getattr(message, field.name)
    if isinstance(value, dict):
        slot.update(value)
    elif isinstance(value, list):
        slot.extend(value)
    elif field.message_type is not None:
        slot.CopyFrom(value)
    else:
        setattr(message, field.name, value)


@st.composite
def _message(draw: st.DrawFn, message: descriptor.Descriptor, depth: int = 0) -> Message:
    """A message of type ``message`` with each field set or not, to anything its type allows."""
    built = GetMessageClass(message)()
    for field in message.fields:
        if field.message_type is not None and depth > 3:
            continue
        if draw(st.booleans()):
            _assign(built, field, draw(_value(field, depth)))
    return built


def _is_repeated(field: descriptor.FieldDescriptor) -> bool:
    return bool(field.is_repeated)


@st.composite
def _mutated(draw: st.DrawFn, seed: Message, changes: int = 2) -> Message:
    """``seed`` with up to ``changes`` fields, at any depth, set to generated values."""
    request = type(seed)()
    request.CopyFrom(seed)
    for _ in range(draw(st.integers(1, changes))):
        target = request
        while True:
            fields = cast("list[descriptor.FieldDescriptor]", list(target.DESCRIPTOR.fields))
            field = draw(st.sampled_from(fields))
            nested = (
                field.message_type is not None
                and not field.message_type.GetOptions().map_entry
                and not _is_repeated(field)
            )
            if nested and draw(st.booleans()):
                target = getattr(target, field.name)  # change one of its fields instead
                continue
            target.ClearField(field.name)
            _assign(target, field, draw(_value(field, 1)))
            break
    return request


def _request(method: descriptor.MethodDescriptor) -> st.SearchStrategy[Message]:
    """From nothing, or (more often) the method's seed with a field or two changed."""
    seed = _SEEDS[method.name]
    return st.one_of(_message(method.input_type), _mutated(seed), _mutated(seed, 1))


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _string_fields(message: descriptor.Descriptor) -> list[int]:
    return [f.number for f in message.fields if f.type == descriptor.FieldDescriptor.TYPE_STRING]


@st.composite
def _raw(draw: st.DrawFn, method: descriptor.MethodDescriptor) -> bytes:
    """Wire bytes: the seed with a string field holding invalid UTF-8, or plain garbage."""
    numbers = _string_fields(method.input_type)
    corrupt_a_string = draw(st.booleans())
    if numbers and corrupt_a_string:
        number = draw(st.sampled_from(numbers))
        invalid = draw(st.sampled_from([b"\xff", b"\xc3\x28", b"abc\xed\xa0\x80", b"\x80" * 64]))
        tag = _varint(number << 3 | 2)
        return _SEEDS[method.name].SerializeToString() + tag + _varint(len(invalid)) + invalid
    return draw(st.binary(min_size=1, max_size=300))


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def memory(
    kafka_bootstrap: str, postgres_dsn: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[Operator, RunningService, grpc.aio.Channel]]:
    operator = Operator.create(tmp_path_factory.mktemp("grpc-methods"))
    async with running_services(kafka_bootstrap, postgres_dsn, operator, ["memory"]) as running:
        service = running["memory"]
        assert isinstance(service.app, MemoryApp)
        channel = create_channel(f"127.0.0.1:{service.app.grpc_port}")
        try:
            yield operator, service, channel
        finally:
            await channel.close()


def _problem(error: grpc.aio.AioRpcError) -> str | None:
    details = (error.details() or "").strip()
    if error.code() in _BAD_STATUSES:
        return f"{error.code().name}: {details!r}"
    if len(details) < 8 or details.lower() in {"internal error", "unknown error", "error"}:
        return f"{error.code().name} with details that name nothing: {details!r}"
    return None


def test_every_method_of_the_service_is_covered() -> None:
    methods = {method.name for method in SERVICE.methods}
    assert methods == set(_SEEDS), (
        f"methods without a seed request here: {sorted(methods - set(_SEEDS))};"
        f" seeds of methods that no longer exist: {sorted(set(_SEEDS) - methods)}"
    )


async def _call(
    channel: grpc.aio.Channel,
    method: descriptor.MethodDescriptor,
    request: bytes,
    metadata: list[tuple[str, str]],
) -> grpc.aio.AioRpcError | None:
    """Sends serialised ``request``; the error it got, or None."""
    call = channel.unary_unary(f"/{SERVICE.full_name}/{method.name}")
    try:
        await call(request, metadata=metadata, timeout=_CALL_TIMEOUT_S)
    except grpc.aio.AioRpcError as error:
        return error
    return None


def _explore(
    loop: asyncio.AbstractEventLoop,
    strategy: st.SearchStrategy[bytes],
    examples: int,
    send: Any,
) -> tuple[int, list[str]]:
    """Runs in a worker thread: the server answers on ``loop``, where each call is sent."""
    problems: list[str] = []
    sent = 0

    @explore(examples)
    @given(request=strategy)
    def run(request: bytes) -> None:
        nonlocal sent
        error = asyncio.run_coroutine_threadsafe(send(request), loop).result(_CALL_TIMEOUT_S + 10)
        sent += 1
        if error is not None and (problem := _problem(error)) is not None:
            problems.append(f"{problem}\n    request ({len(request)} bytes): {request[:200]!r}")

    run()
    return sent, problems


@pytest.mark.timeout(240)
@pytest.mark.parametrize("name", [method.name for method in SERVICE.methods])
async def test_generated_requests_never_get_internal_and_every_error_is_named(
    memory: tuple[Operator, RunningService, grpc.aio.Channel], name: str
) -> None:
    operator, _, channel = memory
    method = SERVICE.methods_by_name[name]
    token = operator.token(("memory:read:*", "memory:write:*"), subject="agent-1")
    authorised = [("authorization", f"Bearer {token}")]
    loop = asyncio.get_running_loop()
    ways: list[tuple[str, st.SearchStrategy[bytes], int, list[tuple[str, str]]]] = [
        ("typed", _request(method).map(lambda m: m.SerializeToString()), _EXAMPLES, authorised),
        ("raw", _raw(method), _RAW_EXAMPLES, authorised),
        ("no token", _request(method).map(lambda m: m.SerializeToString()), 5, []),
        (
            "garbage token",
            _raw(method),
            5,
            [("authorization", "Bearer not.a.jwt")],
        ),
    ]
    problems: list[str] = []
    total = 0
    for label, strategy, examples, metadata in ways:

        async def send(request: bytes, metadata: list[tuple[str, str]] = metadata) -> Any:
            return await _call(channel, method, request, metadata)

        sent, found = await asyncio.to_thread(_explore, loop, strategy, examples, send)
        total += sent
        problems += [f"[{label}] {problem}" for problem in found]
    print(f"{name}: {total} generated requests")
    unique = list(dict.fromkeys(problems))
    assert not unique, f"{name}: {len(unique)} bad answer(s):\n" + "\n".join(unique[:15])
