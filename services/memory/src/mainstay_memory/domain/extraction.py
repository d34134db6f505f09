"""Facts a language model extracts from an episode, and how little of its answer is trusted.

The optional curator asks a model to turn an ``EPISODE`` (free text recorded by
an agent) into durable memories: facts, preferences, decisions, observations.
The episode is untrusted, so the answer is too: a prompt injection inside the
episode can make the model say anything. Nothing the model returns is
executed or passed through; :func:`parse_facts` reads it as strict JSON and
rebuilds each fact from the few fields it knows, under fixed bounds:

- the answer must be one JSON object with a ``facts`` list, else
  :class:`MalformedFacts` (a permanent error: the same episode gets the same
  answer, so the message goes to the DLQ with the reason instead of looping);
- each fact keeps only ``content``, ``kind``, ``subject`` and ``importance``;
  unknown fields are ignored;
- a fact is dropped when its content is empty or too long, or its kind is not
  one a curator may write (never ``episode``: a derived episode would be
  curated again);
- a subject that is not a dotted lowercase key (``user.home_city``) is removed
  but the fact is kept: subjects decide which record a write supersedes, so
  only well-formed keys may take part;
- importance is clamped to 0..1 (missing or not a number: 0.5);
- repeats (same normalised content, or same subject) keep the first;
- at most ``max_facts`` survive, the most important, in the model's order.

Pure: no I/O library is imported here (see ARCHITECTURE.md).
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from mainstay_common.errors import PermanentError
from mainstay_memory.domain.curation import normalise
from mainstay_memory.domain.model import Kind, RememberCommand

if TYPE_CHECKING:
    from collections.abc import Sequence

    from mainstay_memory.domain.model import MemoryRecord

__all__ = [
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
]

DERIVABLE_KINDS = frozenset({Kind.FACT, Kind.PREFERENCE, Kind.DECISION, Kind.OBSERVATION})
"""What a curator may write: everything but ``episode``."""

MAX_FACT_CHARS = 1000
"""A fact is a sentence or two; anything longer is the episode echoed back (or worse)."""

MAX_ANSWER_CHARS = 256_000
"""Parsing cost stays bounded whatever the server sends."""

# Items inspected before the count cap applies: a list of a million junk items
# costs no more than this many.
_MAX_CANDIDATES = 200
_MAX_SUBJECT_CHARS = 200  # the contract's limit on ``subject``
_SUBJECT = re.compile(r"[a-z][a-z0-9_]*(?:\.[a-z0-9_]+){1,7}")
_DEFAULT_IMPORTANCE = 0.5


class MalformedFacts(PermanentError):
    """A model's answer is not the JSON document it was asked for.

    Permanent: asked again (at temperature 0) the model answers the same, so
    retrying would only spend money; the DLQ keeps the message for a replay
    once the model or the prompt is fixed.
    """


@dataclass(frozen=True)
class ExtractedFact:
    """One durable memory proposed by the curator, already validated."""

    content: str
    kind: Kind = Kind.FACT
    subject: str = ""
    importance: float = _DEFAULT_IMPORTANCE


class FactExtractor(Protocol):
    """Turns an episode's text into facts worth remembering (the curator's port).

    Implementations call a model with explicit timeouts and return the answer
    through :func:`parse_facts`, so every adapter hands back the same validated
    shape. Provider failures raise retryable errors; an answer that is not the
    promised shape raises :class:`MalformedFacts`.
    """

    @property
    def model_name(self) -> str: ...

    async def extract(self, text: str) -> list[ExtractedFact]: ...


def parse_facts(answer: str, *, max_facts: int) -> list[ExtractedFact]:
    """The facts of a model's answer, which must be ``{"facts": [...]}`` as strict JSON."""
    if len(answer) > MAX_ANSWER_CHARS:
        raise MalformedFacts(f"the answer is longer than {MAX_ANSWER_CHARS} characters")
    try:
        document: Any = json.loads(answer, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        # The answer is never quoted: it derives from untrusted text.
        raise MalformedFacts("the answer is not JSON") from exc
    if not isinstance(document, dict):
        raise MalformedFacts(f"the answer is a JSON {_type_name(document)}, not an object")
    facts = document.get("facts")
    if not isinstance(facts, list):
        raise MalformedFacts("the answer has no 'facts' list")
    return clean_facts(facts, max_facts=max_facts)


def clean_facts(items: Sequence[object], *, max_facts: int) -> list[ExtractedFact]:
    """Rebuild facts from decoded JSON items under the bounds of the module docstring.

    Raises :class:`MalformedFacts` when items were given but none is an object
    with a string ``content``: a model that answers in another shape must be
    noticed, not read as "nothing to remember".
    """
    if max_facts < 1:
        raise ValueError("max_facts must be at least 1")
    candidates = items[:_MAX_CANDIDATES]
    kept: list[ExtractedFact] = []
    seen_content: set[str] = set()
    seen_subject: set[str] = set()
    shaped = 0
    for item in candidates:
        if not isinstance(item, dict) or not isinstance(item.get("content"), str):
            continue
        shaped += 1
        fact = _fact(item)
        if fact is None:
            continue
        key = normalise(fact.content)
        if key in seen_content or (fact.subject and fact.subject in seen_subject):
            continue
        seen_content.add(key)
        if fact.subject:
            seen_subject.add(fact.subject)
        kept.append(fact)
    if candidates and not shaped:
        raise MalformedFacts(
            f"none of the {len(candidates)} facts is an object with a string 'content'"
        )
    if len(kept) <= max_facts:
        return kept
    # The most important survive; a stable sort keeps the model's order among equals.
    chosen = set(sorted(range(len(kept)), key=lambda i: -kept[i].importance)[:max_facts])
    return [fact for i, fact in enumerate(kept) if i in chosen]


def derived_commands(
    episode: MemoryRecord, facts: Sequence[ExtractedFact], *, model: str
) -> list[RememberCommand]:
    """The writes that store ``facts`` next to the episode they came from.

    Same scope and source (task and step) as the episode, so they are recalled
    and audited together; valid from the episode's time, so ``as_of`` sees a
    fact from when it was said. ``derived_from`` names the episode and
    ``curator_model`` the model, so a derived memory is never mistaken for one
    an agent stated. The idempotency key numbers the facts of one episode: a
    redelivered event replays the stored results instead of writing again.
    """
    metadata = {"derived_from": episode.id, "curator_model": model}
    return [
        RememberCommand(
            scope=episode.scope,
            kind=fact.kind,
            content=fact.content,
            subject=fact.subject,
            metadata=dict(metadata),
            importance=fact.importance,
            source=episode.source,
            idempotency_key=idempotency_key(episode.id, n),
            valid_from=episode.valid_from,
        )
        for n, fact in enumerate(facts)
    ]


def idempotency_key(episode_id: str, n: int) -> str:
    """The key of the ``n``-th fact derived from an episode (per tenant, like every key)."""
    return f"curator:{episode_id}:{n}"


def valid_subject(value: str) -> bool:
    """Whether ``value`` is a dotted lowercase key such as ``user.home_city``."""
    return len(value) <= _MAX_SUBJECT_CHARS and _SUBJECT.fullmatch(value) is not None


def _fact(item: dict[str, Any]) -> ExtractedFact | None:
    content = _text(item["content"])
    if not content or len(content) > MAX_FACT_CHARS:
        return None
    kind = _kind(item.get("kind"))
    if kind is None:
        return None
    return ExtractedFact(
        content=content,
        kind=kind,
        subject=_subject(item.get("subject")),
        importance=_importance(item.get("importance")),
    )


def _text(value: str) -> str:
    """One line without control characters (PostgreSQL rejects NUL in text)."""
    visible = "".join(" " if unicodedata.category(ch) in {"Cc", "Zl", "Zp"} else ch for ch in value)
    return " ".join(visible.split())


def _kind(value: object) -> Kind | None:
    if value is None or value == "":
        return Kind.FACT
    if not isinstance(value, str):
        return None
    try:
        kind = Kind(value.strip().lower())
    except ValueError:
        return None
    return kind if kind in DERIVABLE_KINDS else None


def _subject(value: object) -> str:
    if not isinstance(value, str):
        return ""
    subject = value.strip().lower()
    return subject if valid_subject(subject) else ""


def _importance(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return _DEFAULT_IMPORTANCE
    if not math.isfinite(value):
        return _DEFAULT_IMPORTANCE
    return min(1.0, max(0.0, float(value)))


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _type_name(value: object) -> str:
    match value:
        case list():
            return "array"
        case str():
            return "string"
        case bool():
            return "boolean"
        case int() | float():
            return "number"
        case None:
            return "null"
        case _:
            return type(value).__name__
