"""``python -m mainstay_memory``: run one memory service instance until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import signal

from mainstay_common.telemetry import configure_logging
from mainstay_memory.app import create_app
from mainstay_memory.settings import MemorySettings


async def _serve() -> None:
    settings = MemorySettings()
    configure_logging(
        settings.telemetry.log_level,
        settings.telemetry.log_json,
        "memory",
        settings.instance_id,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with create_app(settings):
        await stop.wait()


def main() -> None:
    asyncio.run(_serve())


if __name__ == "__main__":
    main()
