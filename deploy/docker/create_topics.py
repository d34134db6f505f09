"""Create every topic of ``deploy/kafka/topics.yaml`` on a Kafka cluster.

docker-compose.yml runs it once, in the supervisor image (which has aiokafka
and PyYAML), before any service starts::

    python create_topics.py --bootstrap kafka:9092 --file topics.yaml --replication-factor 1

Partitions and topic configs come from the file. ``--replication-factor``
replaces the file's (3, for real clusters) on a smaller cluster, and
``min.insync.replicas`` is then capped at it: a single broker cannot keep two
in-sync replicas, and producers (``acks=all``) would be refused. Topics that
exist already are left exactly as they are, so a second run changes nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["TopicPlan", "main", "plan"]

_TOPIC_ALREADY_EXISTS = 36
_MIN_ISR = "min.insync.replicas"


@dataclass(frozen=True)
class TopicPlan:
    """One topic as it is to be created."""

    name: str
    partitions: int
    replication_factor: int
    configs: dict[str, str]


def plan(
    document: dict[str, Any], *, replication_factor: int | None = None, prefix: str = ""
) -> list[TopicPlan]:
    """The topics of a parsed ``topics.yaml``; ``replication_factor`` overrides the file's."""
    if document.get("version") != 1:
        raise ValueError(f"unsupported topics.yaml version {document.get('version')!r}")
    planned: list[TopicPlan] = []
    for entry in document["topics"]:
        replicas = int(replication_factor or entry["replication_factor"])
        configs = {str(key): str(value) for key, value in (entry.get("configs") or {}).items()}
        if _MIN_ISR in configs:
            configs[_MIN_ISR] = str(min(int(configs[_MIN_ISR]), replicas))
        planned.append(
            TopicPlan(
                name=f"{prefix}{entry['name']}",
                partitions=int(entry["partitions"]),
                replication_factor=replicas,
                configs=configs,
            )
        )
    return planned


async def _create(bootstrap: str, topics: list[TopicPlan], *, timeout_s: float) -> int:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # noqa: PLC0415 - image-only

    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000)
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [topic for topic in topics if topic.name not in existing]
        for topic in topics:
            if topic.name in existing:
                print(f"kept    {topic.name}")
        if not missing:
            return 0
        response = await admin.create_topics(
            [
                NewTopic(
                    topic.name,
                    topic.partitions,
                    topic.replication_factor,
                    topic_configs=topic.configs,
                )
                for topic in missing
            ],
            timeout_ms=int(timeout_s * 1000),
        )
    finally:
        await admin.close()
    failed = 0
    for entry in response.topic_errors:
        name, code = str(entry[0]), int(entry[1])
        if code in (0, _TOPIC_ALREADY_EXISTS):
            print(f"created {name}" if code == 0 else f"kept    {name}")
        else:
            failed += 1
            message = entry[2] if len(entry) > 2 else ""
            print(f"FAILED  {name}: error {code} {message or ''}", file=sys.stderr)
    return 1 if failed else 0


async def _create_with_retries(
    bootstrap: str, topics: list[TopicPlan], *, attempts: int, timeout_s: float
) -> int:
    for attempt in range(1, attempts + 1):
        try:
            return await _create(bootstrap, topics, timeout_s=timeout_s)
        except Exception as exc:  # noqa: BLE001 - a broker still starting raises many kinds
            if attempt == attempts:
                print(f"cannot create topics on {bootstrap}: {exc!r}", file=sys.stderr)
                return 1
            print(f"broker not ready ({exc!r}); retrying", file=sys.stderr)
            await asyncio.sleep(2.0)
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True, help="host:port[,host:port...]")
    parser.add_argument("--file", type=Path, required=True, help="deploy/kafka/topics.yaml")
    parser.add_argument("--replication-factor", type=int, default=None)
    parser.add_argument("--prefix", default="", help="MAINSTAY_KAFKA_TOPIC_PREFIX, if any")
    parser.add_argument("--attempts", type=int, default=30)
    parser.add_argument("--timeout-s", type=float, default=30.0)
    args = parser.parse_args(argv)

    import yaml  # noqa: PLC0415 - image-only

    document = yaml.safe_load(args.file.read_text(encoding="utf-8"))
    topics = plan(document, replication_factor=args.replication_factor, prefix=args.prefix)
    return asyncio.run(
        _create_with_retries(
            args.bootstrap, topics, attempts=args.attempts, timeout_s=args.timeout_s
        )
    )


if __name__ == "__main__":
    sys.exit(main())
