"""The provider-neutral types: tool-call parsing, validation, the checkpoint round trip."""

from __future__ import annotations

import copy
import email.utils
import json
import pickle
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mainstay_execution.providers import Message, ModelError, ModelReply, ToolCall, Usage
from mainstay_execution.providers._http import (
    ToolNames,
    classify_status,
    parse_retry_after,
    sanitize_tool_name,
)

# --- tool calls ---------------------------------------------------------------------


def test_a_json_object_is_parsed() -> None:
    call = ToolCall.parse("c1", "search", '{"query": "kafka", "limit": 3}')
    assert call.arguments == {"query": "kafka", "limit": 3}
    assert call.error is None
    assert call.raw_arguments == '{"query": "kafka", "limit": 3}'


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ('{"query": "kafka"', "not valid JSON"),
        ("", "not valid JSON"),
        ("[1, 2]", "must be a JSON object, got an array"),
        ('"text"', "must be a JSON object, got a string"),
        ("null", "must be a JSON object, got null"),
        ('{"x": NaN}', "not valid JSON"),
        ('{"x": Infinity}', "not valid JSON"),
    ],
)
def test_malformed_arguments_give_an_error_not_an_exception(raw: str, problem: str) -> None:
    call = ToolCall.parse("c1", "search", raw)
    assert call.arguments is None
    assert call.error is not None
    assert problem in call.error
    assert call.raw_arguments == raw


def test_a_call_without_a_tool_name_is_an_error() -> None:
    call = ToolCall.parse("c1", "", "{}")
    assert call.arguments is None
    assert call.error == "the tool call names no tool"


def test_a_call_without_arguments_must_say_why() -> None:
    with pytest.raises(ValueError, match="error"):
        ToolCall(id="c1", name="search", arguments=None, raw_arguments="")


def test_of_writes_compact_json() -> None:
    call = ToolCall.of("c1", "search", {"query": "ü"})
    assert call.raw_arguments == '{"query":"ü"}'
    assert call.arguments == {"query": "ü"}


# --- messages ---------------------------------------------------------------------------


def test_tool_messages_need_the_call_they_answer() -> None:
    with pytest.raises(ValueError, match="tool_call_id"):
        Message("tool", "result")
    with pytest.raises(ValueError, match="tool_call_id"):
        Message("user", "hi", tool_call_id="c1")


def test_only_assistants_call_tools() -> None:
    with pytest.raises(ValueError, match="assistant"):
        Message("user", "hi", tool_calls=(ToolCall.of("c1", "search", {}),))


def test_an_unknown_role_is_refused() -> None:
    with pytest.raises(ValueError, match="role"):
        Message("robot", "hi")  # type: ignore[arg-type]


def test_usage_prompt_tokens_count_cached_ones_too() -> None:
    assert Usage(input_tokens=7, output_tokens=2, cached_tokens=3).prompt_tokens == 10


# --- the checkpoint round trip -------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
json_objects = st.dictionaries(st.text(max_size=8), json_values, max_size=5)


@st.composite
def tool_calls(draw: st.DrawFn) -> ToolCall:
    call_id, name = draw(st.text(min_size=1, max_size=20)), draw(st.text(max_size=20))
    if draw(st.booleans()):
        return ToolCall.of(call_id, name, draw(json_objects))
    return ToolCall.parse(call_id, name, draw(st.text(max_size=40)))


replies = st.builds(
    ModelReply,
    text=st.none() | st.text(),
    tool_calls=st.lists(tool_calls(), max_size=3).map(tuple),
    usage=st.builds(
        Usage,
        input_tokens=st.integers(0, 10**9),
        output_tokens=st.integers(0, 10**9),
        cached_tokens=st.integers(0, 10**9),
    ),
    model=st.text(min_size=1, max_size=30),
    finish_reason=st.sampled_from(["stop", "tool_calls", "length", "content_filter", "other"]),
    provider=st.sampled_from(["openai", "anthropic"]),
)


@given(replies)
def test_a_reply_reads_back_exactly(reply: ModelReply) -> None:
    text = reply.to_json()
    assert ModelReply.from_json(text) == reply
    assert ModelReply.from_json(text.encode()) == reply
    # what asyncpg hands back for a jsonb column decoded with json.loads
    assert ModelReply.from_json(json.loads(text)) == reply
    assert ModelReply.from_json(text).to_json() == text


def test_the_raw_arguments_survive_byte_for_byte() -> None:
    raw = '{ "b" : 1,\n  "a": [1.50, "x"] }'
    reply = ModelReply(
        text=None,
        tool_calls=(ToolCall.parse("c1", "search", raw),),
        usage=Usage(1, 2, 3),
        model="gpt-a",
        finish_reason="tool_calls",
        provider="openai",
    )
    assert ModelReply.from_json(reply.to_json()).tool_calls[0].raw_arguments == raw


@pytest.mark.parametrize(
    "garbage",
    [
        "not json",
        "[]",
        "{}",
        '{"format": 2}',
        json.dumps(
            {
                "format": 1,
                "provider": "openai",
                "model": "m",
                "text": None,
                "finish_reason": "stop",
                "tool_calls": [],
                "usage": {"input_tokens": "1", "output_tokens": 0, "cached_tokens": 0},
            }
        ),
    ],
)
def test_anything_else_is_refused(garbage: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        ModelReply.from_json(garbage)


# --- errors -------------------------------------------------------------------------------


def test_model_error_validates_what_it_carries() -> None:
    with pytest.raises(ValueError, match="kind"):
        ModelError("x", kind="sometimes", provider="openai", model="m")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="retry_after"):
        ModelError("x", kind="rate_limited", provider="openai", model="m", retry_after=-1)
    error = ModelError("boom", kind="permanent", provider="openai", model="m", status=400)
    assert str(error) == "boom"
    assert not error.retryable
    assert ModelError("x", kind="malformed", provider="openai", model="m").retryable


def test_model_error_survives_copy_and_pickle() -> None:
    error = ModelError(
        "slow down", kind="rate_limited", provider="anthropic", model="m", status=429, retry_after=2
    )
    for clone in (copy.deepcopy(error), pickle.loads(pickle.dumps(error))):
        assert repr(clone) == repr(error)
        assert (clone.provider, clone.model) == ("anthropic", "m")


@pytest.mark.parametrize(
    ("status", "kwargs", "kind"),
    [
        (429, {}, "rate_limited"),
        (429, {"code": "insufficient_quota"}, "permanent"),
        (503, {}, "overloaded"),
        (529, {}, "overloaded"),
        (500, {"error_type": "overloaded_error"}, "overloaded"),
        (500, {}, "transient"),
        (502, {}, "transient"),
        (504, {}, "transient"),
        (408, {}, "transient"),
        (400, {}, "permanent"),
        (401, {}, "permanent"),
        (403, {}, "permanent"),
        (404, {}, "permanent"),
        (422, {}, "permanent"),
        (302, {}, "permanent"),
    ],
)
def test_statuses_are_classified(status: int, kwargs: dict[str, Any], kind: str) -> None:
    assert classify_status(status, **kwargs) == kind


def test_retry_after_in_every_form() -> None:
    assert parse_retry_after({"retry-after": "7"}) == 7.0
    assert parse_retry_after({"retry-after": "1.5"}) == 1.5
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({"retry-after": "-3"}) == 0.0
    assert parse_retry_after({}) is None
    later = email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=40), usegmt=True)
    seconds = parse_retry_after({"retry-after": later})
    assert seconds is not None
    assert 35 < seconds <= 40
    past = email.utils.format_datetime(datetime.now(UTC) - timedelta(hours=1), usegmt=True)
    assert parse_retry_after({"retry-after": past}) == 0.0


# --- tool names -----------------------------------------------------------------------------


def test_tool_names_are_made_acceptable_and_mapped_back() -> None:
    names = ToolNames(["weather.lookup", "weather_lookup", "search", "x" * 70])
    assert names.to_wire("search") == "search"
    assert names.to_wire("weather_lookup") == "weather_lookup"
    assert names.to_wire("weather.lookup") == "weather_lookup_2"
    assert names.from_wire("weather_lookup_2") == "weather.lookup"
    assert names.from_wire("weather_lookup") == "weather_lookup"
    assert len(names.to_wire("x" * 70)) == 64
    assert names.from_wire(names.to_wire("x" * 70)) == "x" * 70
    assert names.from_wire("invented") == "invented"
    assert sanitize_tool_name("a b/c") == "a_b_c"
