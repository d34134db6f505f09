"""Starting aiokafka clients so that a start cut short leaves no connection behind."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from mainstay_common.lifecycle import within

__all__ = ["start_kafka_client"]

_log = logging.getLogger("mainstay.bus")

# Starts finishing in the background after their caller gave up on them (kept here so
# the event loop does not drop them half-way).
_finishing: set[asyncio.Future[Any]] = set()


class _KafkaClient(Protocol):
    async def start(self) -> None: ...


async def _stop(client: Any) -> None:
    """``stop()`` for consumers and producers, ``close()`` for the admin client."""
    stop = getattr(client, "stop", None) or client.close
    await stop()


async def _stop_after_start(client: Any) -> None:
    """Stop a client whose start finished after its caller gave up on it. Its caller may
    have stopped it meanwhile, which did nothing to what the start opened after that
    (stopping twice is a no-op): the connections and the metadata task are closed
    on the network client itself too."""
    await _stop(client)
    # The consumer's and admin client's network client is ``_client``, the producer's ``client``.
    network = getattr(client, "_client", None) or getattr(client, "client", None)
    if network is not None:
        await network.close()


async def start_kafka_client(client: _KafkaClient, *, timeout_s: float) -> None:
    """Start an aiokafka consumer, producer or admin client within ``timeout_s``.

    On a failure, a timeout or a cancellation the client is stopped and the error
    raised. A start that is still running then is not interrupted: aiokafka keeps the
    connection of its first metadata request in a local variable, and cancelling
    that request leaves the connection open and unreachable (closing the client does
    not close it). The start finishes in the background and the client is stopped
    when it does, so the caller is not held up and no socket is left behind (stopping
    the client meanwhile as well is harmless).
    """
    starting = asyncio.ensure_future(client.start())
    try:
        await within(asyncio.shield(starting), timeout_s)
    except BaseException:
        if starting.done():
            await _stop(client)
        else:
            _finishing.add(starting)
            starting.add_done_callback(lambda done: _stop_when_started(client, done))
        raise


def _stop_when_started(client: Any, starting: asyncio.Future[Any]) -> None:
    _finishing.discard(starting)
    if not starting.cancelled() and starting.exception() is not None:
        _log.debug("a Kafka client given up on failed to start: %r", starting.exception())
    stopping = asyncio.ensure_future(_stop_after_start(client))
    _finishing.add(stopping)
    stopping.add_done_callback(_finishing.discard)
