"""Creating topics: the bus's own (origin, retry tiers, DLQ) and the registry's."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import aiokafka.client
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.protocol.metadata import MetadataRequest

from mainstay_common.bus._clients import start_kafka_client
from mainstay_common.errors import DependencyUnavailable
from mainstay_common.lifecycle import within

if TYPE_CHECKING:
    from collections.abc import Sequence

    from mainstay_contracts import TopicSpec

__all__ = [
    "create_missing_topics",
    "refuse_topic_auto_creation",
    "spec_topic",
    "unique_topics",
]

_TOPIC_ALREADY_EXISTS = 36


def spec_topic(spec: TopicSpec[Any], *, prefix: str = "", replication_factor: int = 1) -> NewTopic:
    """The topic a registry entry declares, ready for the admin API."""
    return NewTopic(
        f"{prefix}{spec.name}",
        spec.partitions,
        replication_factor,
        topic_configs=spec.topic_config(),
    )


def unique_topics(topics: Sequence[NewTopic]) -> list[NewTopic]:
    """Each name once, the first declaration winning.

    A topic can be both consumed and declared as published; Apache Kafka refuses
    a CreateTopics request that names a topic twice.
    """
    seen: set[str] = set()
    unique = []
    for topic in topics:
        if topic.name not in seen:
            seen.add(topic.name)
            unique.append(topic)
    return unique


class _ExistingTopicsOnly(MetadataRequest):  # type: ignore[misc]
    """A metadata request that never asks the broker to create the topics it names."""

    def __init__(
        self, topics: list[str] | None = None, allow_auto_topic_creation: bool | None = None
    ) -> None:
        super().__init__(topics, allow_auto_topic_creation=False)


def refuse_topic_auto_creation() -> None:
    """Make every Kafka client of this process ask for metadata without creating topics.

    aiokafka's metadata requests let the broker create a topic they name, and a broker
    that does (Apache Kafka's default, the embedded one always) creates it with its
    own default partition count: a consumer subscribed to a topic that is missing for
    a moment (the embedded broker came back empty) would create it with 4 partitions
    where its declaration says 6, before the owner creates it right. Producers that
    still know the 6 partitions then write to partitions the broker does not have
    (it acknowledges and drops them), and tasks land on partitions other than the one
    their id maps to. A topic is created by its owner only (:func:`create_missing_topics`).
    """
    current = getattr(aiokafka.client, "MetadataRequest", None)
    if current is _ExistingTopicsOnly:
        return
    if current is not MetadataRequest:
        raise RuntimeError("aiokafka's client builds metadata requests differently; check the pin")
    aiokafka.client.MetadataRequest = _ExistingTopicsOnly


async def create_missing_topics(
    bootstrap: str, topics: Sequence[NewTopic], *, timeout_s: float = 30.0
) -> list[str]:
    """Create the topics that do not exist yet; returns the names created.

    Existing topics are left exactly as they are, so this is safe to repeat and
    safe to race with another instance doing the same.
    """
    topics = unique_topics(topics)
    if not topics:
        return []
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000)
    )
    try:
        await start_kafka_client(admin, timeout_s=timeout_s)
        existing = set(await within(admin.list_topics(), timeout_s))
        missing = [topic for topic in topics if topic.name not in existing]
        if not missing:
            return []
        response = await within(admin.create_topics(missing), timeout_s)
    except DependencyUnavailable:
        raise
    except Exception as exc:
        raise DependencyUnavailable(f"cannot create topics on {bootstrap}: {exc!r}") from exc
    finally:
        await admin.close()
    created: list[str] = []
    problems: list[str] = []
    for entry in response.topic_errors:
        name, code = str(entry[0]), int(entry[1])
        message = entry[2] if len(entry) > 2 else None
        if code == 0:
            created.append(name)
        elif code != _TOPIC_ALREADY_EXISTS:
            problems.append(f"{name}: error {code} {message or ''}".rstrip())
    if problems:
        raise DependencyUnavailable("the broker refused some topics: " + "; ".join(problems))
    return sorted(created)
