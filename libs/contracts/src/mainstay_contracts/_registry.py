"""The topic registry: every topic of the mesh is declared here exactly once.

Code imports topic specs from this package instead of writing topic names as
strings; ``deploy/kafka/topics.yaml`` and ``schemas/events/*.json`` are
generated from the default registry.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

from pydantic import BaseModel

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["REGISTRY", "TopicKind", "TopicRegistry", "TopicSpec", "topic_name_problem"]

TopicKind = Literal["evt", "cmd"]
P = TypeVar("P", bound=BaseModel)

# <owner>.<evt|cmd>.<subject>.v<major>; lowercase, hyphens inside a segment.
_SEGMENT = r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*"
_TOPIC_RE = re.compile(
    rf"^(?P<owner>{_SEGMENT})\.(?P<kind>evt|cmd)\.(?P<subject>{_SEGMENT})\.v(?P<major>[1-9][0-9]*)$"
)


def topic_name_problem(name: str) -> str | None:
    """Why ``name`` breaks the naming rule, or ``None`` when it follows it."""
    if "_" in name:
        return f"topic {name!r} contains an underscore; use hyphens inside a segment"
    if name != name.lower():
        return f"topic {name!r} must be lowercase"
    if not _TOPIC_RE.match(name):
        return f"topic {name!r} must look like <owner>.<evt|cmd>.<subject>.v<major>"
    return None


@dataclass(frozen=True)
class TopicSpec(Generic[P]):
    """One declared topic.

    ``key_field`` names the payload field whose value is the message key (the
    aggregate id), so per-entity order holds. ``retention_ms`` of ``None``
    keeps the broker default; ``compacted`` topics keep the latest value per key.
    """

    name: str
    owner: str
    kind: TopicKind
    key_field: str
    payload: type[P]
    partitions: int = 6
    retention_ms: int | None = 7 * 24 * 3600 * 1000
    compacted: bool = False
    description: str = ""
    event_types: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        problem = topic_name_problem(self.name)
        if problem:
            raise ValueError(problem)
        match = _TOPIC_RE.match(self.name)
        assert match is not None
        if match["owner"] != self.owner:
            raise ValueError(f"topic {self.name!r} must start with its owner {self.owner!r}")
        if match["kind"] != self.kind:
            raise ValueError(f"topic {self.name!r} is declared as kind {self.kind!r}")
        fields = {**self.payload.model_fields, **self.payload.model_computed_fields}
        if self.key_field not in fields:
            raise ValueError(
                f"topic {self.name!r}: key field {self.key_field!r} is not a field of "
                f"{self.payload.__name__}"
            )
        if self.partitions < 1:
            raise ValueError(f"topic {self.name!r}: partitions must be >= 1")
        if self.retention_ms is not None and self.retention_ms != -1 and self.retention_ms < 1:
            raise ValueError(
                f"topic {self.name!r}: retention_ms must be positive, -1 (forever) or None "
                "(the broker default)"
            )

    @property
    def major_version(self) -> int:
        match = _TOPIC_RE.match(self.name)
        assert match is not None
        return int(match["major"])

    @property
    def default_event_type(self) -> str:
        """The CloudEvents ``type`` used when the publisher names none."""
        return f"mainstay.{self.name}"

    def key_of(self, payload: P) -> str:
        value: Any = getattr(payload, self.key_field)
        return str(value)

    def topic_config(self) -> dict[str, str]:
        """Kafka topic configs for creating this topic."""
        config: dict[str, str] = {}
        if self.compacted:
            config["cleanup.policy"] = "compact"
        if self.retention_ms is not None and not self.compacted:
            config["retention.ms"] = str(self.retention_ms)
        return config


class TopicRegistry:
    """A set of topic specs with unique names."""

    def __init__(self) -> None:
        self._topics: dict[str, TopicSpec[Any]] = {}

    def register(self, spec: TopicSpec[P]) -> TopicSpec[P]:
        existing = self._topics.get(spec.name)
        if existing is not None and existing != spec:
            raise ValueError(
                f"topic {spec.name!r} is declared twice (payloads "
                f"{_qualified(existing.payload)} and {_qualified(spec.payload)}); "
                "declare each topic once and import its spec"
            )
        self._topics[spec.name] = spec
        return spec

    def get(self, name: str) -> TopicSpec[Any]:
        try:
            return self._topics[name]
        except KeyError:
            raise KeyError(f"no topic named {name!r} is registered") from None

    def __contains__(self, name: object) -> bool:
        return name in self._topics

    def __iter__(self) -> Iterator[TopicSpec[Any]]:
        return iter(sorted(self._topics.values(), key=lambda spec: spec.name))

    def __len__(self) -> int:
        return len(self._topics)


def _qualified(model: type[BaseModel]) -> str:
    return f"{model.__module__}.{model.__qualname__}"


REGISTRY = TopicRegistry()
"""The mesh's registry; topic modules register into it on import."""
