"""Who is calling: the identity a verified token carries, and how scopes match.

Scopes are OAuth2 strings made of colon-separated segments (``memory:read``,
``tools:call:web-search``). The wildcard convention is deliberately small, so a
reviewer can check a grant in their head:

- a granted ``*`` grants every scope (the development admin token carries it);
- a granted scope ending in ``:*`` grants every scope that starts with the part
  before the ``*``: ``memory:*`` grants ``memory:read`` and ``memory:read:notes``,
  but neither ``memory`` itself nor ``memory-admin:read``;
- anything else grants exactly itself. A ``*`` in the *required* scope is an
  ordinary character, so asking for ``memory:*`` needs a token granting
  ``memory:*`` (or ``*``), not merely ``memory:read``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from mainstay_common.errors import PermissionDenied

if TYPE_CHECKING:
    from collections.abc import Mapping
    from datetime import datetime

__all__ = ["Principal", "scope_grants"]


def scope_grants(granted: str, required: str) -> bool:
    """Whether holding ``granted`` allows an operation that needs ``required``."""
    if granted in {"*", required}:
        return True
    return granted.endswith(":*") and required.startswith(granted[:-1])


@dataclass(frozen=True, slots=True)
class Principal:
    """A verified caller.

    ``subject`` is whom the token speaks for; when an agent acts on behalf of a
    user (RFC 8693 token exchange) ``actor_chain`` lists the actors, the current
    one first, then whoever it acts for in turn, so audit records can name both.
    ``claims`` keeps the raw token claims for rare needs and stays out of
    ``repr`` so a logged principal never carries them.
    """

    subject: str
    tenant: str
    scopes: frozenset[str]
    token_id: str
    expires_at: datetime
    actor_chain: tuple[str, ...] = ()
    claims: Mapping[str, Any] = field(
        default_factory=lambda: MappingProxyType({}), repr=False, compare=False, hash=False
    )

    def __post_init__(self) -> None:
        # A frozen principal should not expose a mutable dict to its readers.
        object.__setattr__(self, "claims", MappingProxyType(dict(self.claims)))

    @property
    def actor(self) -> str | None:
        """The party actually making the call when it differs from ``subject``."""
        return self.actor_chain[0] if self.actor_chain else None

    def has_scope(self, scope: str) -> bool:
        """Whether any granted scope grants ``scope`` (see the module docstring)."""
        return any(scope_grants(granted, scope) for granted in self.scopes)

    def require_scope(self, scope: str) -> None:
        """Raise :class:`PermissionDenied` naming ``scope`` unless it is granted."""
        if not self.has_scope(scope):
            raise PermissionDenied(f"missing scope '{scope}'")

    def require_tenant(self, tenant: str, *, doing: str = "acting in another tenant") -> None:
        """Raise :class:`PermissionDenied` unless ``tenant`` is the principal's own, or it
        holds the ``'*'`` scope (every tenant)."""
        if tenant != self.tenant and not self.has_scope("*"):
            raise PermissionDenied(f"{doing} needs the '*' scope")
