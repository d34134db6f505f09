"""The blocking face of :class:`~mainstay_client.Mainstay`, for scripts and notebooks.

The async client runs on a private event loop in a background thread; each call
waits for its result. Example::

    from mainstay_client import MainstaySync

    with MainstaySync() as mainstay:
        task = mainstay.submit_task("researcher", "Summarise the week's incidents")
        for event in task.events():
            print(event.type, event.step or "")
        print(task.wait().answer)
"""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING, Any, TypeVar

from mainstay_client._tasks import Mainstay

if TYPE_CHECKING:
    from collections.abc import Coroutine, Iterator, Mapping
    from datetime import datetime

    from mainstay_client._settings import ClientSettings
    from mainstay_client._tasks import TaskHandle
    from mainstay_contracts.execution import TaskEvent

__all__ = ["LoopThread", "MainstaySync", "TaskHandleSync"]

T = TypeVar("T")


class LoopThread:
    """An event loop of its own in a daemon thread; :meth:`run` waits for a coroutine."""

    def __init__(self, name: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()


class MainstaySync:
    """:class:`~mainstay_client.Mainstay`, blocking; a context manager."""

    def __init__(self, settings: ClientSettings | None = None, *, token: str | None = None) -> None:
        self._client = Mainstay(settings, token=token)
        self._loop = LoopThread("mainstay-client")

    def __enter__(self) -> MainstaySync:
        try:
            self._loop.run(self._client.__aenter__())
        except BaseException:
            self._loop.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._loop.run(self._client.__aexit__())
        finally:
            self._loop.close()

    def submit_task(
        self,
        agent: str,
        input: str,
        *,
        task_id: str | None = None,
        max_cost_micros: int | None = None,
        deadline: datetime | None = None,
        priority: int = 5,
        labels: Mapping[str, str] | None = None,
    ) -> TaskHandleSync:
        """See :meth:`Mainstay.submit_task`."""
        handle = self._loop.run(
            self._client.submit_task(
                agent,
                input,
                task_id=task_id,
                max_cost_micros=max_cost_micros,
                deadline=deadline,
                priority=priority,
                labels=labels,
            )
        )
        return TaskHandleSync(handle, self._loop)

    def task(self, task_id: str) -> TaskHandleSync:
        return TaskHandleSync(self._loop.run(self._client.task(task_id)), self._loop)

    def cancel_task(self, task_id: str, reason: str = "cancelled by its submitter") -> None:
        self._loop.run(self._client.cancel_task(task_id, reason))


class TaskHandleSync:
    """:class:`~mainstay_client.TaskHandle`, blocking."""

    def __init__(self, handle: TaskHandle, loop: LoopThread) -> None:
        self._handle = handle
        self._loop = loop
        self.task_id = handle.task_id

    def __repr__(self) -> str:
        return f"TaskHandleSync({self.task_id!r})"

    def events(self, *, timeout_s: float | None = None) -> Iterator[TaskEvent]:
        """See :meth:`TaskHandle.events`."""
        events = self._handle.events(timeout_s=timeout_s)
        try:
            while True:
                try:
                    yield self._loop.run(anext(events))
                except StopAsyncIteration:
                    return
        finally:
            self._loop.run(events.aclose())

    def wait(self, timeout_s: float | None = None) -> TaskEvent:
        return self._loop.run(self._handle.wait(timeout_s))

    def cancel(self, reason: str = "cancelled by its submitter") -> None:
        self._loop.run(self._handle.cancel(reason))
