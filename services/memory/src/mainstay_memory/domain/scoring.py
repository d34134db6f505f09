"""Recall scoring: vector and keyword relevance fused with recency and importance.

Every part is brought into 0..1 and the total is their weighted sum, so a
caller can see why a memory ranked where it did:

* ``semantic``: cosine similarity of query and memory, below 0 counted as 0;
* ``keyword``: full-text rank relative to the best keyword match of this recall;
* ``recency``: halves every ``recency_half_life`` since the memory became valid;
* ``importance``: as stored (0..1).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from mainstay_memory.domain.model import ScoredRecord, ScoreParts

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from datetime import datetime

    from mainstay_memory.domain.model import MemoryRecord

__all__ = ["RecallWeights", "rank", "score"]


@dataclass(frozen=True)
class RecallWeights:
    semantic: float = 0.55
    keyword: float = 0.25
    recency: float = 0.1
    importance: float = 0.1
    recency_half_life: timedelta = timedelta(days=30)

    def __post_init__(self) -> None:
        parts = (self.semantic, self.keyword, self.recency, self.importance)
        if any(w < 0 for w in parts) or sum(parts) <= 0:
            raise ValueError("recall weights must be >= 0 and not all 0")


def score(
    record: MemoryRecord,
    *,
    similarity: float,
    keyword: float,
    now: datetime,
    weights: RecallWeights,
) -> ScoreParts:
    """The parts of one record's score; ``keyword`` must already be in 0..1."""
    semantic = min(max(similarity, 0.0), 1.0)
    keyword = min(max(keyword, 0.0), 1.0)
    age = max((now - record.valid_from).total_seconds(), 0.0)
    recency = 0.5 ** (age / weights.recency_half_life.total_seconds())
    importance = min(max(record.importance, 0.0), 1.0)
    total = (
        weights.semantic * semantic
        + weights.keyword * keyword
        + weights.recency * recency
        + weights.importance * importance
    ) / (weights.semantic + weights.keyword + weights.recency + weights.importance)
    return ScoreParts(
        semantic=semantic, keyword=keyword, recency=recency, importance=importance, total=total
    )


def rank(
    records: Sequence[MemoryRecord],
    *,
    similarities: Mapping[str, float],
    keyword_ranks: Mapping[str, float],
    now: datetime,
    weights: RecallWeights,
    top_k: int,
    min_score: float = 0.0,
) -> list[ScoredRecord]:
    """Score ``records`` and keep the best ``top_k`` at or above ``min_score``.

    Keyword ranks are raw full-text ranks; they are divided by the best one in
    this recall so the strongest keyword match counts 1. Ties break on the
    record id, so the order is stable.
    """
    best_keyword = max(keyword_ranks.values(), default=0.0)
    scored = [
        ScoredRecord(
            record=record,
            parts=score(
                record,
                similarity=similarities.get(record.id, 0.0),
                keyword=(keyword_ranks.get(record.id, 0.0) / best_keyword)
                if best_keyword > 0
                else 0.0,
                now=now,
                weights=weights,
            ),
        )
        for record in records
    ]
    scored = [s for s in scored if s.parts.total >= min_score]
    scored.sort(key=lambda s: (-s.parts.total, s.record.id))
    return scored[:top_k]
