"""The broker and PostgreSQL a benchmark runs on, and the service processes it starts.

``MAINSTAY_KAFKA_BOOTSTRAP`` / ``MAINSTAY_POSTGRES_DSN`` when both are set,
otherwise the embedded broker and PostgreSQL started on free ports for the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import TYPE_CHECKING

import httpx

from mainstay_common.lifecycle import within
from mainstay_common.testing import start_test_stack

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

__all__ = ["process", "stack", "wait_ready"]


@contextlib.asynccontextmanager
async def stack() -> AsyncIterator[tuple[str, str]]:
    """``(kafka_bootstrap, postgres_dsn)`` for the duration of the block."""
    async with start_test_stack(
        kafka=os.environ.get("MAINSTAY_KAFKA_BOOTSTRAP"),
        postgres=os.environ.get("MAINSTAY_POSTGRES_DSN"),
    ) as addresses:
        yield addresses.kafka_bootstrap, addresses.postgres_dsn


async def wait_ready(url: str, process: asyncio.subprocess.Process, what: str) -> None:
    async with httpx.AsyncClient() as client:
        for _ in range(600):
            if process.returncode is not None:
                raise RuntimeError(f"{what} exited with code {process.returncode}")
            with contextlib.suppress(httpx.TransportError):
                if (await client.get(url)).status_code < 500:
                    return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{what} did not become ready at {url}")


@contextlib.asynccontextmanager
async def process(
    args: list[str], *, env: dict[str, str], ready_url: str, what: str, log_file: Path
) -> AsyncIterator[None]:
    with log_file.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            *args, env=env, stdout=out, stderr=asyncio.subprocess.STDOUT
        )
    try:
        await wait_ready(ready_url, proc, what)
        yield
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await within(proc.wait(), 20)
            except TimeoutError:
                proc.kill()
                await proc.wait()
