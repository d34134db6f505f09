"""Calculator, schema feedback, redaction, Retry-After and status classification."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mainstay_tools_gateway.domain.calculator import CalculatorError, evaluate
from mainstay_tools_gateway.domain.model import classify_status, parse_retry_after
from mainstay_tools_gateway.domain.redaction import (
    REDACTED,
    Redactor,
    argument_digest,
    redact_arguments,
)
from mainstay_tools_gateway.domain.schemas import SchemaCheck, closest_names, schema_problem


@pytest.mark.parametrize(
    ("expression", "value"),
    [("2*(3+4)", 14), ("-3 + 2**10", 1021), ("7 // 2 + 7 % 2", 4), ("1/4", 0.25), (" 3.5 ", 3.5)],
)
def test_calculator_evaluates_arithmetic(expression: str, value: float) -> None:
    assert evaluate(expression) == value


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("__import__('os').system('true')", "is not allowed"),
        ("x + 1", "is not allowed"),
        ("1/0", "division by zero"),
        ("9**9**9", "exponents are limited"),
        ("2 +", "not an arithmetic expression"),
        ("(-1) ** 0.5", "not a real number"),
        ("1" * 1001, "longer than"),
        ("True + 1", "is not allowed"),
    ],
)
def test_calculator_refuses_what_is_not_plain_arithmetic(expression: str, reason: str) -> None:
    with pytest.raises(CalculatorError, match=reason):
        evaluate(expression)


@given(st.integers(-(10**6), 10**6), st.integers(-(10**6), 10**6))
def test_calculator_agrees_with_python_on_integers(a: int, b: int) -> None:
    assert evaluate(f"({a}) * ({b}) - ({b})") == a * b - b


def test_schema_problems_name_each_path() -> None:
    check = SchemaCheck(
        {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer", "minimum": 1, "maximum": 14},
                "items": {"type": "array", "items": {"type": "object", "required": ["qty"]}},
            },
            "required": ["city"],
            "additionalProperties": False,
        }
    )
    problems = check.problems({"days": 40, "items": [{"qty": 1}, {}], "color": "red"})
    found = {(p.path, p.message) for p in problems}
    assert ("/days", "40 is greater than the maximum of 14") in found
    assert ("/items/1", "'qty' is a required property") in found
    assert ("", "'city' is a required property") in found
    assert any("'color' was unexpected" in m for _, m in found)
    assert check.problems({"city": "Berlin"}) == []


def test_an_invalid_schema_is_named() -> None:
    assert schema_problem({"type": "object"}) is None
    problem = schema_problem({"type": "objekt"})
    assert problem is not None
    assert "objekt" in problem


def test_closest_names_suggest_the_likely_tool() -> None:
    names = ["calculator", "http_fetch", "weather.forecast", "weather.alerts"]
    assert closest_names("calculater", names)[0] == "calculator"
    assert "weather.forecast" in closest_names("forecast", names)
    assert closest_names("zzz", names) == []


def test_redaction_of_arguments_and_known_secrets() -> None:
    args = {"user": "ann", "password": "hunter2", "nested": [{"api_key": "k"}], "Token": 5}
    redacted = redact_arguments(args)
    assert redacted == {
        "user": "ann",
        "password": REDACTED,
        "nested": [{"api_key": REDACTED}],
        "Token": REDACTED,
    }
    # The digest ignores secret values and depends on everything else.
    assert argument_digest(args) == argument_digest({**args, "password": "other"})
    assert argument_digest(args) != argument_digest({**args, "user": "bob"})
    assert argument_digest(args).startswith("sha256:")

    redactor = Redactor(["s3cr3t-value", "ab"])
    assert redactor.text("Bearer s3cr3t-value!") == f"Bearer {REDACTED}!"
    assert redactor.value({"h": ["x s3cr3t-value"], "ab": "abc"}) == {
        "h": [f"x {REDACTED}"],
        "ab": "abc",
    }


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, None),
        (204, None),
        (400, "PERMANENT"),
        (404, "PERMANENT"),
        (408, "TRANSIENT"),
        (429, "RATE_LIMITED"),
        (500, "TRANSIENT"),
        (503, "TRANSIENT"),
    ],
)
def test_status_classification(status: int, outcome: str | None) -> None:
    assert classify_status(status) == outcome


def test_retry_after_in_seconds_or_as_a_date() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_retry_after("7") == 7.0
    assert (
        parse_retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True), now=now)
        == 30.0
    )
    assert parse_retry_after("-5") == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None
    assert parse_retry_after("nan") is None
