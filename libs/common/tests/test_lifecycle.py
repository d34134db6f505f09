"""Stopping background tasks: a cancellation is never lost, a stop never hangs."""

from __future__ import annotations

import asyncio
import logging
import sys

import pytest

from mainstay_common.lifecycle import cancel_and_wait, sweep_forever, within


async def _cancelled_as_it_finishes(wait: object) -> asyncio.Task[int]:
    """A task awaiting a future, cancelled in the same step as the future completes."""
    done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    runs = 0

    async def loop() -> int:
        nonlocal runs
        while True:
            await wait(done, 5)  # type: ignore[operator]
            runs += 1
            if runs > 1:
                return runs

    task = asyncio.create_task(loop())
    await asyncio.sleep(0)  # the task now waits for ``done``
    done.set_result(1)
    task.cancel()
    await asyncio.wait({task}, timeout=2)
    return task


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="wait_for keeps it from Python 3.12 on")
async def test_asyncio_wait_for_loses_such_a_cancellation() -> None:
    # Why ``within`` exists: Python 3.11's ``wait_for`` returns the result instead.
    task = await _cancelled_as_it_finishes(asyncio.wait_for)  # noqa: TID251
    assert not task.cancelled()
    assert task.result() == 2


async def test_within_keeps_such_a_cancellation() -> None:
    task = await _cancelled_as_it_finishes(within)
    assert task.cancelled()


async def test_within_returns_the_result_or_raises_timeout_error() -> None:
    assert await within(asyncio.sleep(0, result="ready"), 1) == "ready"
    assert await within(asyncio.sleep(0, result="no limit"), None) == "no limit"
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    with pytest.raises(TimeoutError):
        await within(never, 0.05)


async def test_a_task_that_swallows_its_cancellation_is_cancelled_again_until_it_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    swallowed = 0

    async def stubborn() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                swallowed += 1
                if swallowed == 3:
                    raise

    task = asyncio.create_task(stubborn(), name="stubborn-sweeper")
    await asyncio.sleep(0)
    with caplog.at_level(logging.WARNING, logger="mainstay.lifecycle"):
        await cancel_and_wait(task, grace_s=0.05)
    assert task.cancelled()
    assert swallowed == 3
    warnings = [r.getMessage() for r in caplog.records if "still runs" in r.getMessage()]
    assert len(warnings) == 2
    assert "'stubborn-sweeper'" in warnings[0]
    assert "stubborn" in warnings[0].split("\n", 1)[1]  # where it was when cancelled again


async def test_a_task_that_ends_when_cancelled_is_cancelled_once_without_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    steps = 0
    running = asyncio.Event()

    async def step() -> int:
        nonlocal steps
        steps += 1
        if steps == 3:
            running.set()
        await asyncio.sleep(0)
        return 0

    task = asyncio.create_task(sweep_forever(step, interval_s=0.001, what="test sweeper"))
    await within(running.wait(), 5)
    with caplog.at_level(logging.WARNING, logger="mainstay.lifecycle"):
        await cancel_and_wait(task, grace_s=5)
    assert task.cancelled()
    assert not [r for r in caplog.records if "still runs" in r.getMessage()]
    await cancel_and_wait(None)
