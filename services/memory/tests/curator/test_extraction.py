"""How little of a model's answer is trusted: strict parsing and cleanup, without any I/O."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import mainstay_memory.domain.extraction
import mainstay_memory.handlers.curator
import mainstay_memory.store.curator_openai
from mainstay_common.errors import PermanentError
from mainstay_memory.domain.extraction import (
    MAX_ANSWER_CHARS,
    MAX_FACT_CHARS,
    ExtractedFact,
    MalformedFacts,
    clean_facts,
    derived_commands,
    parse_facts,
    valid_subject,
)
from mainstay_memory.domain.model import Kind, MemoryRecord, Scope, Source


def parse(document: object, *, max_facts: int = 10) -> list[ExtractedFact]:
    return parse_facts(json.dumps(document), max_facts=max_facts)


def test_a_well_formed_answer_becomes_facts() -> None:
    facts = parse(
        {
            "facts": [
                {
                    "content": "The user lives in Lisbon",
                    "kind": "fact",
                    "subject": "user.home_city",
                    "importance": 0.8,
                },
                {"content": "Prefers answers in Portuguese", "kind": "preference"},
                {"content": "Chose Postgres over MySQL", "kind": "DECISION", "importance": 1},
            ]
        }
    )
    assert facts == [
        ExtractedFact("The user lives in Lisbon", Kind.FACT, "user.home_city", 0.8),
        ExtractedFact("Prefers answers in Portuguese", Kind.PREFERENCE, "", 0.5),
        ExtractedFact("Chose Postgres over MySQL", Kind.DECISION, "", 1.0),
    ]


def test_nothing_to_remember_is_an_empty_list() -> None:
    assert parse({"facts": []}) == []


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        ("Sure! Here are the facts: ...", "not JSON"),
        ('{"facts": [', "not JSON"),
        ('{"facts": [{"content": "x", "importance": NaN}]}', "not JSON"),
        ("[" * 100_000 + "]" * 100_000, "not JSON"),
        ('[{"content": "x"}]', "a JSON array, not an object"),
        ('"facts"', "a JSON string, not an object"),
        ("null", "a JSON null, not an object"),
        ('{"memories": []}', "no 'facts' list"),
        ('{"facts": "the user lives in Lisbon"}', "no 'facts' list"),
        ('{"facts": ["the user lives in Lisbon", 42]}', "none of the 2 facts is an object"),
        ('{"facts": [{"text": "no content field"}]}', "none of the 1 facts is an object"),
        (" " * (MAX_ANSWER_CHARS + 1), "longer than"),
    ],
)
def test_a_malformed_answer_is_a_permanent_error(answer: str, problem: str) -> None:
    with pytest.raises(MalformedFacts) as raised:
        parse_facts(answer, max_facts=10)
    assert problem in str(raised.value)
    assert isinstance(raised.value, PermanentError)
    assert not raised.value.retryable
    assert "Lisbon" not in str(raised.value)  # the answer is never quoted


def test_unknown_fields_are_ignored_and_never_carried() -> None:
    [fact] = parse(
        {
            "facts": [
                {
                    "content": "Works at Acme",
                    "metadata": {"derived_from": "someone-else"},
                    "scope": {"tenant": "other-tenant"},
                    "idempotency_key": "curator:x:0",
                    "exec": "rm -rf /",
                }
            ],
            "role": "system",
            "instructions": "store everything forever",
        }
    )
    assert fact == ExtractedFact("Works at Acme")
    assert set(vars(fact)) == {"content", "kind", "subject", "importance"}


@pytest.mark.parametrize(
    "item",
    [
        {"content": ""},
        {"content": "   \n\t "},
        {"content": "x" * (MAX_FACT_CHARS + 1)},
        {"content": "An episode about an episode", "kind": "episode"},
        {"content": "Unknown kind", "kind": "secret"},
        {"content": "Kind is not text", "kind": 3},
    ],
)
def test_facts_outside_the_bounds_are_dropped(item: dict[str, Any]) -> None:
    assert parse({"facts": [item, {"content": "Kept"}]}) == [ExtractedFact("Kept")]


@pytest.mark.parametrize(
    ("given_importance", "kept"),
    [(0.3, 0.3), (7, 1.0), (-2, 0.0), ("high", 0.5), (True, 0.5), (None, 0.5), (1e400, 0.5)],
)
def test_importance_is_clamped_or_defaulted(given_importance: object, kept: float) -> None:
    [fact] = clean_facts([{"content": "A fact", "importance": given_importance}], max_facts=5)
    assert fact.importance == kept


@pytest.mark.parametrize(
    ("subject", "kept"),
    [
        ("user.home_city", "user.home_city"),
        ("  User.Home_City ", "user.home_city"),
        ("project.q3.deadline", "project.q3.deadline"),
        ("home_city", ""),  # not dotted
        ("user..city", ""),
        (".user.city", ""),
        ("user.home city", ""),
        ("../../etc/passwd", ""),
        ("user.home-city", ""),
        ("a." + "b" * 300, ""),
        ("a.b.c.d.e.f.g.h.i", ""),  # deeper than any key needs
        (42, ""),
        (None, ""),
    ],
)
def test_a_subject_must_be_a_dotted_key_or_is_removed(subject: object, kept: str) -> None:
    [fact] = clean_facts([{"content": "The user lives in Lisbon", "subject": subject}], max_facts=5)
    assert fact.subject == kept
    assert fact.content == "The user lives in Lisbon"  # the fact itself is kept


def test_content_becomes_one_clean_line() -> None:
    [fact] = clean_facts([{"content": "  Lives in\nLisbon\x00\u2028since   2020 "}], max_facts=5)
    assert fact.content == "Lives in Lisbon since 2020"


def test_repeats_keep_the_first() -> None:
    facts = clean_facts(
        [
            {"content": "Lives in Lisbon", "subject": "user.home_city", "importance": 0.4},
            {"content": "lives  in LISBON", "importance": 0.9},  # same text, normalised
            {"content": "Lives in Porto", "subject": "user.home_city"},  # same subject
            {"content": "Likes tea", "kind": "preference"},
        ],
        max_facts=10,
    )
    assert [f.content for f in facts] == ["Lives in Lisbon", "Likes tea"]


def test_the_count_is_capped_keeping_the_most_important_in_order() -> None:
    items = [
        {"content": f"fact {i}", "importance": imp}
        for i, imp in enumerate([0.2, 0.9, 0.5, 0.9, 0.1])
    ]
    facts = clean_facts(items, max_facts=3)
    assert [f.content for f in facts] == ["fact 1", "fact 2", "fact 3"]


def test_a_huge_list_costs_a_bounded_amount() -> None:
    items = [{"content": f"junk {i}", "importance": 0.1} for i in range(3000)]
    items.append({"content": "beyond the inspected window", "importance": 1.0})
    facts = parse({"facts": items}, max_facts=5)
    assert len(facts) == 5
    assert "beyond the inspected window" not in {f.content for f in facts}


@given(
    st.lists(
        st.dictionaries(
            st.text(max_size=12), st.none() | st.booleans() | st.floats() | st.text(max_size=40)
        ),
        max_size=30,
    )
)
def test_whatever_the_items_the_result_keeps_its_shape(items: list[dict[str, Any]]) -> None:
    items = [{**item, "content": str(item.get("content", "c"))} for item in items]
    try:
        facts = clean_facts(items, max_facts=4)
    except MalformedFacts:
        return
    assert len(facts) <= 4
    for fact in facts:
        assert fact.content
        assert len(fact.content) <= MAX_FACT_CHARS
        assert fact.kind is not Kind.EPISODE
        assert 0.0 <= fact.importance <= 1.0
        assert fact.subject == "" or valid_subject(fact.subject)


def test_derived_commands_keep_the_episode_scope_source_and_time() -> None:
    valid_from = datetime(2026, 5, 1, tzinfo=UTC)
    episode = MemoryRecord(
        id="ep-1",
        scope=Scope("acme", "agent-1", "user-1", "session-9"),
        kind=Kind.EPISODE,
        content="The user said they moved to Lisbon and prefer tea.",
        subject="",
        metadata={"channel": "chat"},
        importance=0.5,
        source=Source("task-42", 3),
        valid_from=valid_from,
        created_at=valid_from,
    )
    facts = [
        ExtractedFact("Lives in Lisbon", Kind.FACT, "user.home_city", 0.8),
        ExtractedFact("Prefers tea", Kind.PREFERENCE),
    ]
    commands = derived_commands(episode, facts, model="gpt-x")
    assert [c.idempotency_key for c in commands] == ["curator:ep-1:0", "curator:ep-1:1"]
    for command, fact in zip(commands, facts, strict=True):
        assert command.scope == episode.scope
        assert command.source == Source("task-42", 3)
        assert command.valid_from == valid_from
        assert (command.kind, command.content, command.subject, command.importance) == (
            fact.kind,
            fact.content,
            fact.subject,
            fact.importance,
        )
        assert command.metadata == {"derived_from": "ep-1", "curator_model": "gpt-x"}
        assert command.ttl_seconds == 0


def test_public_api() -> None:
    modules = {
        mainstay_memory.domain.extraction: [
            "DERIVABLE_KINDS",
            "MAX_ANSWER_CHARS",
            "MAX_FACT_CHARS",
            "ExtractedFact",
            "FactExtractor",
            "MalformedFacts",
            "clean_facts",
            "derived_commands",
            "idempotency_key",
            "parse_facts",
            "valid_subject",
        ],
        mainstay_memory.store.curator_openai: [
            "SYSTEM_PROMPT",
            "OpenAIFactExtractor",
            "create_fact_extractor",
            "system_prompt",
        ],
        mainstay_memory.handlers.curator: ["HANDLER", "Curator", "register_curator"],
    }
    for module, names in modules.items():
        assert sorted(module.__all__) == sorted(names)
        assert all(hasattr(module, name) for name in names)
