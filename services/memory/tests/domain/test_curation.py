"""Curation decisions, without any I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mainstay_memory.domain.curation import Thresholds, decide, merge_into, normalise, supersede
from mainstay_memory.domain.model import Kind, MemoryRecord, Outcome, RememberCommand, Scope, Source

NOW = datetime(2026, 5, 1, tzinfo=UTC)
SCOPE = Scope("acme", "agent-1", "user-1")
THRESHOLDS = Thresholds(duplicate_similarity=0.97, merge_similarity=0.92)


def record(
    content: str, *, subject: str = "", kind: Kind = Kind.FACT, scope: Scope = SCOPE, **kw
) -> MemoryRecord:
    return MemoryRecord(
        id=kw.pop("id", "r-1"),
        scope=scope,
        kind=kind,
        content=content,
        subject=subject,
        metadata=kw.pop("metadata", {}),
        importance=kw.pop("importance", 0.5),
        source=Source(),
        valid_from=kw.pop("valid_from", NOW - timedelta(days=3)),
        created_at=NOW - timedelta(days=3),
        **kw,
    )


def command(content: str, *, subject: str = "", kind: Kind = Kind.FACT, **kw) -> RememberCommand:
    return RememberCommand(
        scope=kw.pop("scope", SCOPE), kind=kind, content=content, subject=subject, **kw
    )


def test_same_subject_with_new_content_supersedes() -> None:
    paris = record("I live in Paris", subject="user.home_city")
    decision = decide(
        command("I moved to Berlin", subject="user.home_city"),
        same_subject=paris,
        neighbours=[],
        thresholds=THRESHOLDS,
    )
    assert decision.outcome is Outcome.SUPERSEDED_PREVIOUS
    assert decision.existing == paris


def test_same_subject_with_same_content_is_a_duplicate() -> None:
    paris = record("I live in Paris", subject="user.home_city")
    decision = decide(
        command("  i live in   PARIS ", subject="user.home_city"),
        same_subject=paris,
        neighbours=[],
        thresholds=THRESHOLDS,
    )
    assert decision.outcome is Outcome.DUPLICATE


@pytest.mark.parametrize(
    ("similarity", "outcome"),
    [
        (0.99, Outcome.DUPLICATE),
        (0.97, Outcome.DUPLICATE),
        (0.95, Outcome.MERGED),
        (0.92, Outcome.MERGED),
        (0.91, Outcome.ADDED),
    ],
)
def test_near_duplicates_by_similarity(similarity: float, outcome: Outcome) -> None:
    tea = record("The user likes green tea")
    decision = decide(
        command("The user really likes green tea"),
        same_subject=None,
        neighbours=[(tea, similarity)],
        thresholds=THRESHOLDS,
    )
    assert decision.outcome is outcome


def test_never_merges_across_scope_kind_or_subject() -> None:
    tea = record("likes green tea")
    other_agent = record("likes green tea", scope=Scope("acme", "agent-2", "user-1"))
    other_kind = record("likes green tea", kind=Kind.PREFERENCE)
    keyed = record("likes green tea", subject="user.drink")
    for neighbour in (other_agent, other_kind):
        assert (
            decide(
                command("likes green tea"),
                same_subject=None,
                neighbours=[(neighbour, 1.0)],
                thresholds=THRESHOLDS,
            ).outcome
            is Outcome.ADDED
        )
    assert (
        decide(
            command("likes green tea", subject="user.snack"),
            same_subject=None,
            neighbours=[(keyed, 1.0)],
            thresholds=THRESHOLDS,
        ).outcome
        is Outcome.ADDED
    )
    assert (
        decide(
            command("likes green tea"),
            same_subject=None,
            neighbours=[(tea, 0.5)],
            thresholds=THRESHOLDS,
        ).outcome
        is Outcome.DUPLICATE
    )


def test_closed_records_are_not_merged_into() -> None:
    old = record("likes green tea", valid_to=NOW - timedelta(days=1))
    decision = decide(
        command("likes green tea"),
        same_subject=None,
        neighbours=[(old, 1.0)],
        thresholds=THRESHOLDS,
    )
    assert decision.outcome is Outcome.ADDED


def test_merge_keeps_content_and_absorbs_importance_and_metadata() -> None:
    tea = record("likes green tea", importance=0.4, metadata={"a": "1"})
    merged = merge_into(tea, command("likes green tea a lot", importance=0.9, metadata={"b": "2"}))
    assert (merged.content, merged.importance, merged.metadata, merged.merged_count) == (
        "likes green tea",
        0.9,
        {"a": "1", "b": "2"},
        1,
    )


def test_supersede_closes_validity_and_never_before_it_began() -> None:
    paris = record("I live in Paris", subject="user.home_city", valid_from=NOW)
    closed = supersede(paris, new_id="r-2", at=NOW + timedelta(hours=1))
    assert (closed.valid_to, closed.superseded_by) == (NOW + timedelta(hours=1), "r-2")
    assert not closed.current
    backdated = supersede(paris, new_id="r-2", at=NOW - timedelta(days=10))
    assert backdated.valid_to == paris.valid_from


def test_thresholds_must_be_ordered() -> None:
    with pytest.raises(ValueError, match="merge <= duplicate"):
        Thresholds(duplicate_similarity=0.8, merge_similarity=0.9)


@given(st.text(max_size=50))
def test_normalise_is_idempotent(text: str) -> None:
    assert normalise(normalise(text)) == normalise(text)
