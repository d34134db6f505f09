"""Mainstay's Python client: submit agent tasks and follow them; agent memory over gRPC.

Configuration comes from the environment (:class:`ClientSettings`):
``MAINSTAY_TOKEN`` or ``MAINSTAY_TOKEN_FILE``, ``MAINSTAY_KAFKA_BOOTSTRAP`` (and
the other ``MAINSTAY_KAFKA_*`` settings), ``MAINSTAY_MEMORY_TARGET``.
"""

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
