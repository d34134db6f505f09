"""Long-lived resources as ``async with`` blocks."""

from __future__ import annotations

from typing import Self

__all__ = ["Resource"]


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
