"""Benchmark: a local HTTP tool called directly vs through the tools gateway (HTTP and Kafka).

One run starts (on the embedded broker and PostgreSQL unless
``MAINSTAY_KAFKA_BOOTSTRAP`` / ``MAINSTAY_POSTGRES_DSN`` are set):

* a tiny HTTP tool (``bench/_echo_tool.py``) in its own process;
* one tools gateway in its own process (``python -m mainstay_tools_gateway``)
  with the tool registered from a registry file (input and output schemas);

and then measures, interleaved so machine noise hits each side alike:

* ``direct``: ``httpx`` posting the arguments to the tool (keep-alive client);
* ``gateway_http``: the same call through ``POST /v1/tools/echo/invoke`` with
  a bearer token: authentication, scope check, input validation, rate-limit
  check skipped (the tool has no limit), breaker, the call, output validation;
  the audit row and the result event (one statement) are written just behind
  the answer, as for every synchronous call without an idempotency key;
* ``gateway_http_limited``: the same through a tool with a rate limit, which
  adds the shared token-bucket statement;
* ``gateway_kafka``: an ``InvokeToolCommand`` published on
  ``tools.cmd.invoke-tool.v1`` until its result arrives on
  ``tools.evt.tool-call.v1`` (idempotency claim, stored result, outbox relay
  included). On the embedded broker a fetch waits its full
  ``MAINSTAY_KAFKA_FETCH_MAX_WAIT_MS`` (100) when there is nothing to read, which
  dominates this figure; Kafka answers a fetch as soon as data arrives.

``overhead_http_p50_ms = gateway_http_p50_ms - direct_p50_ms``; target < 5 ms.
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import yaml
from _stack import process, stack  # bench/, the script's own folder, is on sys.path
from aiokafka import AIOKafkaConsumer, TopicPartition

from mainstay_common.auth import TokenSigner
from mainstay_common.bus import Bus
from mainstay_common.devstack import free_port
from mainstay_common.settings import KafkaSettings
from mainstay_contracts.tools import INVOKE_TOOL, TOOL_CALLS, InvokeToolCommand

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

HERE = Path(__file__).parent
SCHEMA_IN = {
    "type": "object",
    "properties": {"query": {"type": "string"}, "limit": {"type": "integer", "minimum": 1}},
    "required": ["query"],
}
SCHEMA_OUT = {"type": "object", "required": ["echo"]}


def log(message: str) -> None:
    print(f"[tools bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class KafkaCaller:
    """Publishes invoke commands and waits for each one's result event."""

    def __init__(self, kafka: KafkaSettings, token: str) -> None:
        self._kafka = kafka
        self._token = token
        self._bus = Bus(service="bench", kafka=kafka)
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=kafka.bootstrap, enable_auto_commit=False, fetch_max_wait_ms=5
        )

    async def __aenter__(self) -> KafkaCaller:
        await self._bus.start()
        await self._consumer.start()
        topic = f"{self._kafka.topic_prefix}{TOOL_CALLS.name}"
        partitions = [TopicPartition(topic, p) for p in range(TOOL_CALLS.partitions)]
        self._consumer.assign(partitions)
        await self._consumer.seek_to_end(*partitions)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._consumer.stop()
        await self._bus.close()

    async def call(self, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
        task_id = f"bench-{uuid.uuid4().hex[:12]}"
        await self._bus.publish(
            INVOKE_TOOL,
            InvokeToolCommand(task_id=task_id, tool=tool, arguments=arguments, token=self._token),
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            batch = await self._consumer.getmany(timeout_ms=100)
            for records in batch.values():
                for record in records:
                    if record.key == task_id.encode():
                        result: dict[str, Any] = json.loads(record.value)
                        return result
        raise RuntimeError(f"no result for {task_id} within 30 s")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


async def measure(
    sides: dict[str, Callable[[], Awaitable[None]]], *, calls: int, warmup: int
) -> dict[str, list[float]]:
    names = list(sides)
    for _ in range(warmup):
        for name in names:
            await sides[name]()
    timings: dict[str, list[float]] = {name: [] for name in names}
    for i in range(calls):
        order = names[i % len(names) :] + names[: i % len(names)]  # rotate who goes first
        for name in order:
            started = time.perf_counter()
            await sides[name]()
            timings[name].append((time.perf_counter() - started) * 1000)
        if (i + 1) % 100 == 0:
            log(f"measured {i + 1}/{calls}")
    return timings


async def run(args: argparse.Namespace) -> dict[str, Any]:
    signer = TokenSigner.generate()
    async with stack() as (bootstrap, dsn):
        with tempfile.TemporaryDirectory(prefix="mainstay-bench-tools-") as home_dir:
            home = Path(home_dir)
            (home / "jwks.json").write_text(json.dumps(signer.jwks()))
            tool_port, gateway_port = free_port(), free_port()
            tool_url = f"http://127.0.0.1:{tool_port}/echo"
            registry = {
                "tools": [
                    {
                        "name": "echo",
                        "kind": "http",
                        "http": {"url": tool_url},
                        "input_schema": SCHEMA_IN,
                        "output_schema": SCHEMA_OUT,
                    },
                    {
                        "name": "echo_limited",
                        "kind": "http",
                        "http": {"url": tool_url},
                        "input_schema": SCHEMA_IN,
                        "output_schema": SCHEMA_OUT,
                        "rate_limit": {
                            "per_agent": {"per_second": 100000, "burst": 100000},
                            "all_agents": {"per_second": 100000, "burst": 100000},
                        },
                    },
                ]
            }
            (home / "tools.yaml").write_text(yaml.safe_dump(registry))
            prefix = f"bench{uuid.uuid4().hex[:6]}."
            env = {
                **os.environ,
                "MAINSTAY_KAFKA_BOOTSTRAP": bootstrap,
                "MAINSTAY_KAFKA_TOPIC_PREFIX": prefix,
                "MAINSTAY_POSTGRES_DSN": dsn,
                "MAINSTAY_AUTH_JWKS_FILE": str(home / "jwks.json"),
                "MAINSTAY_TELEMETRY_LOG_LEVEL": "WARNING",
                "TOOLS_GATEWAY_HTTP_PORT": str(gateway_port),
                "TOOLS_GATEWAY_REGISTRY_FILE": str(home / "tools.yaml"),
                "TOOLS_GATEWAY_SHUTDOWN_GRACE_S": "2",
            }
            gateway_url = f"http://127.0.0.1:{gateway_port}"
            log("starting the tool and the gateway")
            async with (
                process(
                    [sys.executable, str(HERE / "_echo_tool.py"), str(tool_port)],
                    env=env,
                    ready_url=f"http://127.0.0.1:{tool_port}/",
                    what="the echo tool",
                    log_file=home / "tool.log",
                ),
                process(
                    [sys.executable, "-m", "mainstay_tools_gateway"],
                    env=env,
                    ready_url=f"{gateway_url}/readyz",
                    what="the tools gateway",
                    log_file=home / "gateway.log",
                ),
            ):
                return await measure_all(args, signer, tool_url, gateway_url, bootstrap, prefix)


async def measure_all(
    args: argparse.Namespace,
    signer: TokenSigner,
    tool_url: str,
    gateway_url: str,
    bootstrap: str,
    prefix: str,
) -> dict[str, Any]:
    token = signer.mint(
        subject="bench-agent", tenant="bench", scopes=["tools:call:*"], ttl=timedelta(hours=2)
    )
    headers = {"Authorization": f"Bearer {token}"}
    arguments = {"query": "weather in Lisbon", "limit": 3}
    kafka = KafkaSettings(bootstrap=bootstrap, topic_prefix=prefix)
    limits = httpx.Limits(max_keepalive_connections=4)
    async with (
        httpx.AsyncClient(limits=limits, timeout=30) as direct_client,
        httpx.AsyncClient(base_url=gateway_url, headers=headers, limits=limits, timeout=30) as gw,
        KafkaCaller(kafka, token) as kafka_caller,
    ):

        async def direct() -> None:
            response = await direct_client.post(tool_url, json=arguments)
            response.raise_for_status()

        async def through(tool: str) -> None:
            response = await gw.post(f"/v1/tools/{tool}/invoke", json={"arguments": arguments})
            outcome = response.json().get("outcome")
            if outcome != "OK":
                raise RuntimeError(f"gateway call ended {outcome}: {response.text}")

        async def gateway_http() -> None:
            await through("echo")

        async def gateway_http_limited() -> None:
            await through("echo_limited")

        async def gateway_kafka() -> None:
            result = await kafka_caller.call("echo", arguments)
            if result["outcome"] != "OK":
                raise RuntimeError(f"kafka call ended {result['outcome']}: {result['message']}")

        log(f"measuring {args.calls} calls per side after {args.warmup} warm-up calls")
        timings = await measure(
            {
                "direct": direct,
                "gateway_http": gateway_http,
                "gateway_http_limited": gateway_http_limited,
                "gateway_kafka": gateway_kafka,
            },
            calls=args.calls,
            warmup=args.warmup,
        )
    p50 = {name: statistics.median(values) for name, values in timings.items()}
    p95 = {name: percentile(values, 0.95) for name, values in timings.items()}
    return {
        "benchmark": "tools",
        "calls": args.calls,
        "direct_p50_ms": round(p50["direct"], 3),
        "gateway_http_p50_ms": round(p50["gateway_http"], 3),
        "gateway_kafka_p50_ms": round(p50["gateway_kafka"], 3),
        "overhead_http_p50_ms": round(p50["gateway_http"] - p50["direct"], 3),
        "target_overhead_http_p50_ms": 5.0,
        "gateway_http_limited_p50_ms": round(p50["gateway_http_limited"], 3),
        "direct_p95_ms": round(p95["direct"], 3),
        "gateway_http_p95_ms": round(p95["gateway_http"], 3),
        "gateway_http_limited_p95_ms": round(p95["gateway_http_limited"], 3),
        "gateway_kafka_p95_ms": round(p95["gateway_kafka"], 3),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=500, help="measured calls per side")
    parser.add_argument("--warmup", type=int, default=50, help="calls per side before measuring")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
