"""Curation: what a new memory does to what is already remembered.

Deterministic and without any model call, in this order:

1. **Same subject** — a write with a ``subject`` (a stable key such as
   ``user.home_city``) meets the current record of the same scope and subject:
   identical content is a ``DUPLICATE``; anything else supersedes it
   (``SUPERSEDED_PREVIOUS``): the old record gets ``valid_to`` and
   ``superseded_by`` and stays in history, so "I moved to Berlin" replaces
   "I live in Paris" while ``as_of`` can still tell what was true before.
2. **Near duplicate** — otherwise the most similar current record of the same
   scope and kind decides: at or above ``duplicate_similarity`` (or identical
   text) the write is a ``DUPLICATE``; at or above ``merge_similarity`` it is
   ``MERGED`` into that record (its importance and metadata absorb the write's).
   A record keyed by a different subject is never merged into.
3. Otherwise the write is ``ADDED``.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from mainstay_memory.domain.model import MemoryRecord, Outcome

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime

    from mainstay_memory.domain.model import RememberCommand

__all__ = ["CurationDecision", "Thresholds", "decide", "merge_into", "normalise", "supersede"]

_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class Thresholds:
    duplicate_similarity: float = 0.97
    merge_similarity: float = 0.92

    def __post_init__(self) -> None:
        if not 0 <= self.merge_similarity <= self.duplicate_similarity <= 1:
            raise ValueError("thresholds must satisfy 0 <= merge <= duplicate <= 1")


@dataclass(frozen=True)
class CurationDecision:
    outcome: Outcome
    existing: MemoryRecord | None = None
    """The record the write was compared against (absent for ADDED)."""
    similarity: float | None = None


def normalise(text: str) -> str:
    """Text as curation compares it: Unicode-normalised, case- and space-insensitive."""
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text)).strip().casefold()


def decide(
    command: RememberCommand,
    *,
    same_subject: MemoryRecord | None,
    neighbours: Sequence[tuple[MemoryRecord, float]],
    thresholds: Thresholds,
) -> CurationDecision:
    """Choose the outcome of ``command``.

    ``same_subject`` is the current record with the command's scope and subject
    (None when the command has no subject or none exists); ``neighbours`` are
    current records of the same scope with their cosine similarity to the new
    content, most similar first.
    """
    content = normalise(command.content)
    if command.subject and same_subject is not None:
        if normalise(same_subject.content) == content and same_subject.kind == command.kind:
            return CurationDecision(Outcome.DUPLICATE, same_subject, 1.0)
        return CurationDecision(Outcome.SUPERSEDED_PREVIOUS, same_subject)
    for record, similarity in neighbours:
        if record.scope != command.scope or record.kind != command.kind or not record.current:
            continue
        if record.subject and command.subject and record.subject != command.subject:
            continue  # keyed facts with different keys are different facts
        if normalise(record.content) == content or similarity >= thresholds.duplicate_similarity:
            return CurationDecision(Outcome.DUPLICATE, record, similarity)
        if similarity >= thresholds.merge_similarity:
            return CurationDecision(Outcome.MERGED, record, similarity)
        break  # neighbours are sorted: nothing further is closer
    return CurationDecision(Outcome.ADDED)


def merge_into(record: MemoryRecord, command: RememberCommand) -> MemoryRecord:
    """The existing record after absorbing a near-duplicate write."""
    return replace(
        record,
        importance=max(record.importance, command.importance),
        metadata={**record.metadata, **command.metadata},
        merged_count=record.merged_count + 1,
    )


def supersede(old: MemoryRecord, *, new_id: str, at: datetime) -> MemoryRecord:
    """The old version once ``new_id`` replaced it at ``at`` (never before it began)."""
    return replace(old, valid_to=max(at, old.valid_from), superseded_by=new_id)
