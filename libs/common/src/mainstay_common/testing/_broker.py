"""A broker of a test's own, to stop and start again."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from mainstay_common.devstack._broker import broker_command, tansu_binary, wait_for_broker
from mainstay_common.devstack._process import restartable_port
from mainstay_common.lifecycle import within

if TYPE_CHECKING:
    from pathlib import Path


class PrivateBroker:
    """The embedded broker (Tansu, in memory) on a fixed loopback port, stoppable.

    Each start writes its log to ``home/broker-<n>.log``; a start after a stop comes
    back on the same address, empty.
    """

    def __init__(self, home: Path, port: int | None = None) -> None:
        self.port = port or restartable_port()
        self._home = home
        self._process: asyncio.subprocess.Process | None = None
        self.starts = 0

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.starts += 1
        log = self._home / f"broker-{self.starts}.log"
        with log.open("wb") as out:
            self._process = await asyncio.create_subprocess_exec(
                *broker_command(tansu_binary(), "127.0.0.1", self.port),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
            )
        process = self._process
        await wait_for_broker(
            self.bootstrap, timeout_s=60, alive=lambda: process.returncode is None, log_file=log
        )

    async def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            await within(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()
