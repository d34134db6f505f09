"""Who may read and write which memories.

A principal acts only inside its own tenant. Within it, scopes name agents:
``memory:read:<agent_id>`` / ``memory:write:<agent_id>`` for one agent's
memory; ``memory:read:*`` (or ``memory:*``, or ``*``) for every agent. Records
stored without an agent (tenant-wide memory) and requests that name no agent
(which reach every agent's memory) need the wildcard.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from mainstay_common.errors import NotFound, PermissionDenied

if TYPE_CHECKING:
    from mainstay_common.auth import Principal
    from mainstay_memory.domain.model import Scope

__all__ = ["Operation", "authorize", "required_scope", "visible"]

Operation = Literal["read", "write"]


def required_scope(operation: Operation, scope: Scope) -> str:
    return f"memory:{operation}:{scope.agent_id or '*'}"


def authorize(principal: Principal, operation: Operation, scope: Scope) -> None:
    """Raise ``PermissionDenied`` naming what is missing, unless ``principal`` may act on ``scope``."""
    if principal.tenant != scope.tenant:
        raise PermissionDenied(
            f"principal of tenant {principal.tenant!r} cannot {operation} memory of tenant {scope.tenant!r}"
        )
    principal.require_scope(required_scope(operation, scope))


def visible(principal: Principal, scope: Scope, record_id: str) -> None:
    """For lookups by id: another tenant's record is reported as not found, never as forbidden."""
    if principal.tenant != scope.tenant:
        raise NotFound(f"no memory record {record_id!r}")
    principal.require_scope(required_scope("read", scope))
