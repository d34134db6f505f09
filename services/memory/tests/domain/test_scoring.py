"""Recall scoring, without any I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mainstay_memory.domain.model import Kind, MemoryRecord, Scope, Source
from mainstay_memory.domain.scoring import RecallWeights, rank, score

NOW = datetime(2026, 5, 1, tzinfo=UTC)


def record(rid: str, *, age_days: float = 0.0, importance: float = 0.5) -> MemoryRecord:
    return MemoryRecord(
        id=rid,
        scope=Scope("acme", "a"),
        kind=Kind.FACT,
        content=rid,
        subject="",
        metadata={},
        importance=importance,
        source=Source(),
        valid_from=NOW - timedelta(days=age_days),
        created_at=NOW - timedelta(days=age_days),
    )


def test_parts_and_total() -> None:
    weights = RecallWeights(
        semantic=0.5,
        keyword=0.25,
        recency=0.125,
        importance=0.125,
        recency_half_life=timedelta(days=10),
    )
    parts = score(
        record("r", age_days=10, importance=0.8),
        similarity=0.6,
        keyword=1.0,
        now=NOW,
        weights=weights,
    )
    assert parts.semantic == pytest.approx(0.6)
    assert parts.keyword == 1.0
    assert parts.recency == pytest.approx(0.5)
    assert parts.importance == pytest.approx(0.8)
    assert parts.total == pytest.approx(0.5 * 0.6 + 0.25 * 1.0 + 0.125 * 0.5 + 0.125 * 0.8)


def test_negative_similarity_counts_as_zero() -> None:
    assert (
        score(record("r"), similarity=-0.4, keyword=0.0, now=NOW, weights=RecallWeights()).semantic
        == 0.0
    )


def test_rank_orders_best_first_filters_and_limits() -> None:
    records = [record("a"), record("b"), record("c"), record("d")]
    ranked = rank(
        records,
        similarities={"a": 0.9, "b": 0.2, "c": 0.5},
        keyword_ranks={"b": 0.4, "c": 0.1},
        now=NOW,
        weights=RecallWeights(),
        top_k=2,
        min_score=0.0,
    )
    assert [s.record.id for s in ranked] == ["a", "b"]  # b: weak vector, best keyword match
    assert ranked[0].parts.keyword == 0.0
    assert (
        rank(
            records,
            similarities={"a": 0.9},
            keyword_ranks={},
            now=NOW,
            weights=RecallWeights(),
            top_k=10,
            min_score=0.9,
        )
        == []
    )


def test_keyword_ranks_are_relative_to_the_best_match() -> None:
    ranked = rank(
        [record("a"), record("b")],
        similarities={},
        keyword_ranks={"a": 0.05, "b": 0.1},
        now=NOW,
        weights=RecallWeights(),
        top_k=2,
    )
    assert [(s.record.id, s.parts.keyword) for s in ranked] == [("b", 1.0), ("a", 0.5)]


def test_weights_are_checked() -> None:
    with pytest.raises(ValueError, match="weights"):
        RecallWeights(semantic=0, keyword=0, recency=0, importance=0)


@given(
    st.floats(-1, 1),
    st.floats(0, 1),
    st.floats(0, 3650),
    st.floats(0, 1),
)
def test_total_stays_in_unit_interval(
    similarity: float, keyword: float, age: float, importance: float
) -> None:
    parts = score(
        record("r", age_days=age, importance=importance),
        similarity=similarity,
        keyword=keyword,
        now=NOW,
        weights=RecallWeights(),
    )
    assert 0.0 <= parts.total <= 1.0
