"""A Kafka client whose start is given up on (a timeout, a shutdown) leaves no socket open.

The broker is reached through a loopback proxy that holds the broker's answers
once the client has sent its second request (the bootstrap metadata request,
after the connection's version lookup), so the start is given up on at exactly
that point.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import warnings
from typing import TYPE_CHECKING, Any

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient

from mainstay_common.bus import start_kafka_client

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

pytestmark = pytest.mark.real


class _HoldingProxy:
    """Forwards to the broker; answers are held back from the client's second request on."""

    def __init__(self, bootstrap: str) -> None:
        host, port = bootstrap.rsplit(":", 1)
        self._target = (host, int(port))
        self.requests = 0
        self.release = asyncio.Event()
        self.metadata_requested = asyncio.Event()
        self._pumps: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []
        self.address = ""

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, answers: bool
    ) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                if answers and self.requests >= 2:
                    await self.release.wait()
                elif not answers:
                    self.requests += 1
                    if self.requests >= 2:
                        self.metadata_requested.set()
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        broker_reader, broker_writer = await asyncio.open_connection(*self._target)
        self._writers += [writer, broker_writer]
        for pump in (
            self._pump(reader, broker_writer, answers=False),
            self._pump(broker_reader, writer, answers=True),
        ):
            task = asyncio.create_task(pump)
            self._pumps.add(task)
            task.add_done_callback(self._pumps.discard)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[_HoldingProxy]:
        server = await asyncio.start_server(self._connected, "127.0.0.1", 0)
        self.address = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
        try:
            yield self
        finally:
            self.release.set()
            server.close()
            for writer in self._writers:
                writer.close()
            for pump in list(self._pumps):
                pump.cancel()
            await asyncio.gather(*self._pumps, return_exceptions=True)
            await server.wait_closed()


async def _until_metadata_requested(proxy: _HoldingProxy) -> None:
    async with asyncio.timeout(20):
        await proxy.metadata_requested.wait()


@contextlib.asynccontextmanager
async def _unclosed_connections() -> AsyncIterator[list[str]]:
    """The Kafka connections found unclosed when collected, from here to a moment
    after the block (answers released, proxy gone, garbage collected)."""
    gc.collect()
    found: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield found
        finally:
            await asyncio.sleep(0.5)
            gc.collect()
            found += [
                str(w.message) for w in caught if "Unclosed AIOKafkaConnection" in str(w.message)
            ]


def _consumer(bootstrap: str) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)


async def _answers_released(proxy: _HoldingProxy) -> None:
    proxy.release.set()
    await asyncio.sleep(1.0)  # the held answer arrives; a start left running ends


async def test_aiokafka_alone_leaves_the_connection_of_a_cancelled_start_open(
    kafka_bootstrap: str,
) -> None:
    """Why the helper exists (if this fails, aiokafka closes it itself now): cancelling
    the start and stopping the client leaves the bootstrap connection open."""
    async with (
        _unclosed_connections() as leaked,
        _HoldingProxy(kafka_bootstrap).running() as proxy,
    ):
        consumer = _consumer(proxy.address)
        starting = asyncio.create_task(consumer.start())
        await _until_metadata_requested(proxy)
        starting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await starting
        await consumer.stop()
        await _answers_released(proxy)
        del consumer, starting
    assert len(leaked) == 1, leaked


async def test_a_cancelled_start_is_finished_and_closed_in_the_background(
    kafka_bootstrap: str,
) -> None:
    async with (
        _unclosed_connections() as leaked,
        _HoldingProxy(kafka_bootstrap).running() as proxy,
    ):
        consumer = _consumer(proxy.address)
        starting = asyncio.create_task(start_kafka_client(consumer, timeout_s=30))
        await _until_metadata_requested(proxy)
        starting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await starting
        await consumer.stop()  # the caller's own clean-up, while the start still runs
        network: Any = consumer._client
        await _answers_released(proxy)
        # What the start opened after the caller's stop is closed too.
        assert all(not conn.connected() for conn in network._conns.values())
        assert network._sync_task is None
        del consumer, starting
    assert leaked == []


async def test_a_start_that_times_out_raises_at_once_and_leaves_nothing_open(
    kafka_bootstrap: str,
) -> None:
    async with (
        _unclosed_connections() as leaked,
        _HoldingProxy(kafka_bootstrap).running() as proxy,
    ):
        admin = AIOKafkaAdminClient(bootstrap_servers=proxy.address)
        with pytest.raises(TimeoutError):
            await start_kafka_client(admin, timeout_s=0.5)
        assert proxy.requests >= 2
        await _answers_released(proxy)
        del admin
    assert leaked == []


async def test_a_start_that_succeeds_leaves_the_client_running(kafka_bootstrap: str) -> None:
    consumer = _consumer(kafka_bootstrap)
    await start_kafka_client(consumer, timeout_s=30)
    try:
        assert consumer._client.cluster.brokers()  # it has the cluster's metadata
    finally:
        await consumer.stop()


async def test_a_start_that_fails_stops_the_client_and_raises_its_error() -> None:
    consumer = _consumer("127.0.0.1:9")  # nothing listens there
    with pytest.raises(Exception, match="Unable to bootstrap"):
        await start_kafka_client(consumer, timeout_s=30)
    assert consumer._closed
