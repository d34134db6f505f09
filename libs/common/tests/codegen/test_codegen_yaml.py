"""The hand-written YAML emitter round-trips through a real YAML parser."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from mainstay_common.codegen import dump_yaml

TRICKY_STRINGS = [
    "plain",
    "cleanup.policy",
    "a/b-c_d.e",
    "",
    " leading space",
    "trailing space ",
    "yes",
    "No",
    "ON",
    "off",
    "null",
    "Null",
    "~",
    "true",
    "y",
    "123",
    "0x1F",
    "1e5",
    "0o17",
    "1_000",
    "12:30:00",
    "2025-01-01",
    ".inf",
    "-.inf",
    ".nan",
    "-",
    "- item",
    "key: value",
    "# comment",
    "a #b",
    "@at",
    "`tick`",
    "!tag",
    "&anchor",
    "*alias",
    "{flow}",
    "[flow]",
    "%percent",
    "quote ' single",
    'quote " double',
    "back\\slash",
    "multi\nline\n",
    "tab\there",
    "cr\rlf",
    "bell\x07",
    "del\x7f",
    "nel\x85",
    "ls\u2028ps\u2029",
    "bom\ufeff",
    "unicode é ü 中文",
    "emoji 😀",
    "<<",
    "=",
    "?",
]


@pytest.mark.parametrize("text", TRICKY_STRINGS)
def test_strings_round_trip(text: str) -> None:
    document = {"value": text, text or "empty": [text]}
    assert yaml.safe_load(dump_yaml(document)) == document


def test_nested_structures_round_trip() -> None:
    document: dict[str, Any] = {
        "version": 1,
        "flags": [True, False, None],
        "numbers": [0, -3, 10**20, 1.5, 1e-05, 1e20, -0.0, 3.0],
        "empty_map": {},
        "empty_list": [],
        "topics": [
            {"name": "a.evt.b.v1", "configs": {"retention.ms": "604800000"}},
            {"name": "c", "nested": [[1, 2], [], [{"x": {"y": ["z"]}}]]},
        ],
        "tuple": (1, "two"),
    }
    expected = dict(document, tuple=[1, "two"])
    assert yaml.safe_load(dump_yaml(document)) == expected


def test_output_is_stable_and_commented() -> None:
    document = {"b": 1, "a": {"c": ["d"]}}
    text = dump_yaml(document, header="line one\n\nline two")
    assert text == dump_yaml(document, header="line one\n\nline two")
    assert text == "# line one\n#\n# line two\nb: 1\na:\n  c:\n    - d\n"


def test_unsupported_values_are_refused() -> None:
    with pytest.raises(TypeError, match="cannot write set"):
        dump_yaml({"a": {1, 2}})
    with pytest.raises(TypeError, match="keys must be strings"):
        dump_yaml({1: "a"})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="non-finite"):
        dump_yaml({"a": float("nan")})
