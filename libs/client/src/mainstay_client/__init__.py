"""Mainstay's Python client: submit agent tasks and follow them; agent memory over gRPC.

Configuration comes from the environment (:class:`ClientSettings`):
``MAINSTAY_TOKEN`` or ``MAINSTAY_TOKEN_FILE``, ``MAINSTAY_KAFKA_BOOTSTRAP`` (and
the other ``MAINSTAY_KAFKA_*`` settings), ``MAINSTAY_MEMORY_TARGET``.

Names are imported on first use, so ``mainstay`` commands that need neither Kafka
nor gRPC start without loading them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mainstay_client._memory import (
        Memory,
        MemoryClient,
        MemoryClientSync,
        Recalled,
        RememberResult,
        ScoreParts,
    )
    from mainstay_client._settings import ClientError, ClientSettings
    from mainstay_client._sync import MainstaySync, TaskHandleSync
    from mainstay_client._tasks import FINAL_TYPES, Mainstay, TaskHandle
    from mainstay_contracts.execution import TaskEvent

__all__ = [
    "FINAL_TYPES",
    "ClientError",
    "ClientSettings",
    "Mainstay",
    "MainstaySync",
    "Memory",
    "MemoryClient",
    "MemoryClientSync",
    "Recalled",
    "RememberResult",
    "ScoreParts",
    "TaskEvent",
    "TaskHandle",
    "TaskHandleSync",
]

_HOMES = {
    "FINAL_TYPES": "mainstay_client._tasks",
    "ClientError": "mainstay_client._settings",
    "ClientSettings": "mainstay_client._settings",
    "Mainstay": "mainstay_client._tasks",
    "MainstaySync": "mainstay_client._sync",
    "Memory": "mainstay_client._memory",
    "MemoryClient": "mainstay_client._memory",
    "MemoryClientSync": "mainstay_client._memory",
    "Recalled": "mainstay_client._memory",
    "RememberResult": "mainstay_client._memory",
    "ScoreParts": "mainstay_client._memory",
    "TaskEvent": "mainstay_contracts.execution",
    "TaskHandle": "mainstay_client._tasks",
    "TaskHandleSync": "mainstay_client._sync",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'mainstay_client' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
