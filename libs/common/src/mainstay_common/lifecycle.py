"""Long-lived resources as ``async with`` blocks."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
from typing import TYPE_CHECKING, Any, Self, TypeVar

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

__all__ = ["Resource", "StackedResource", "cancel_and_wait", "sweep_forever", "within"]

_T = TypeVar("_T")

_log = logging.getLogger("mainstay.lifecycle")


class Resource:
    """Started on entering ``async with`` and closed on leaving it, also on error.

    Subclasses implement :meth:`start` and :meth:`close`; a composition root
    stacks them (for example in an ``AsyncExitStack``) so they close in the
    reverse order of starting.
    """

    async def start(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


class StackedResource(Resource):
    """A resource built from parts started in order and closed in reverse.

    A subclass implements :meth:`_start`, entering each part on ``stack``; a
    start that fails half-way closes the parts already started before raising.
    """

    def __init__(self) -> None:
        self._stack = contextlib.AsyncExitStack()

    async def _start(self, stack: contextlib.AsyncExitStack) -> None:
        raise NotImplementedError

    async def start(self) -> None:
        try:
            await self._start(self._stack)
        except BaseException:
            await self._stack.aclose()
            raise

    async def close(self) -> None:
        await self._stack.aclose()


async def within(awaitable: Awaitable[_T], timeout: float | None) -> _T:  # noqa: ASYNC109
    """``await awaitable``, raising ``TimeoutError`` after ``timeout`` seconds (``None``: never).

    Use this, not ``asyncio.wait_for``: on Python 3.11 ``wait_for`` returns the
    result instead of raising when its caller is cancelled in the same step as
    the awaited thing finishes, so the cancellation is lost and a loop around
    it runs on after being stopped. ``asyncio.timeout`` does not lose it.
    """
    async with asyncio.timeout(timeout):
        return await awaitable


async def cancel_and_wait(task: asyncio.Task[Any] | None, *, grace_s: float = 10.0) -> None:
    """Cancel a background task and wait until it has finished unwinding.

    A task still running ``grace_s`` after being cancelled is cancelled again,
    with a warning, until it ends: code that swallows a cancellation (a
    library's, or ``asyncio.wait_for`` on Python 3.11) must not turn a
    shutdown into a hang.
    """
    if task is None:
        return
    task.cancel()
    while True:
        done, _ = await asyncio.wait({task}, timeout=grace_s)
        if done:
            break
        where = io.StringIO()
        task.print_stack(file=where)
        _log.warning(
            "Task %r still runs %.1f s after it was cancelled; cancelling it again\n%s",
            task.get_name(),
            grace_s,
            where.getvalue(),
        )
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def sweep_forever(
    step: Callable[[], Awaitable[int]], *, interval_s: float, what: str
) -> None:
    """Run ``step`` every ``interval_s`` until cancelled; ``step`` returns how much it did.

    A full batch (anything done) means more may be due, so ``step`` runs again
    at once until it finds nothing. A failure (PostgreSQL away, a bad row) is
    logged and retried at the next interval: the sweeper outlives it.
    """
    while True:
        try:
            while await step() > 0:
                pass
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - the sweeper must outlive one failure
            _log.exception("%s failed; retrying at the next interval", what)
        await asyncio.sleep(interval_s)
