"""Work that must happen only once a transaction has committed (metrics, in-memory state).

A transactional handler's writes may be rolled back and redone (a group
commit that failed redoes its messages), so anything it changes outside the
database would happen twice or for nothing. ``after_commit(fn)`` defers ``fn``
to the commit of the transaction the bus runs the handler in; outside such a
transaction it runs ``fn`` at once.

>>> async def handle(event, tx):
...     await tx.execute("INSERT ...")
...     after_commit(lambda: posted.inc())
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

__all__ = ["after_commit", "commit_hooks", "run_hooks"]

_log = logging.getLogger("mainstay.db")
_pending: contextvars.ContextVar[list[Callable[[], None]] | None] = contextvars.ContextVar(
    "mainstay_after_commit", default=None
)


def after_commit(callback: Callable[[], None]) -> None:
    """Run ``callback`` once the current handler transaction commits (now, outside one).

    It runs in the context it was registered in (a copy), so what it starts stays in
    the handler's trace even when the commit happens after the handler's span ended.
    """
    hooks = _pending.get()
    if hooks is None:
        callback()
    else:
        hooks.append(functools.partial(contextvars.copy_context().run, callback))


@contextlib.contextmanager
def commit_hooks() -> Iterator[list[Callable[[], None]]]:
    """Collect ``after_commit`` callbacks made inside the block; the caller runs them with
    :func:`run_hooks` after the commit, or drops them when the transaction rolled back."""
    hooks: list[Callable[[], None]] = []
    token = _pending.set(hooks)
    try:
        yield hooks
    finally:
        _pending.reset(token)


def run_hooks(hooks: list[Callable[[], None]]) -> None:
    """Run collected callbacks; one that fails is logged and does not stop the others."""
    for callback in hooks:
        try:
            callback()
        except Exception:  # noqa: BLE001 - the commit stands whatever a callback does
            _log.exception("an after-commit callback failed")
