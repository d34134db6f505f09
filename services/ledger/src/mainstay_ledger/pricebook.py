"""The price book: versioned prices per model (input, output and cached tokens) and per tool call.

Prices are integers of micro-units of a currency: per million tokens for a
model, per call for a tool. Setting a price adds a version, in force from
``effective_from`` (now by default) until a later version takes over, so a
past usage record is always priced as it was. Items are named
``model:<name>`` or ``tool:<name>``. A tenant's own price overrides the one
for every tenant (``tenant=''``).

:func:`cost` is the formula; the schema's ``price_usage`` (which prices usage
as it is posted) computes the same, and a test holds the two together.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from mainstay_common.errors import InvalidArgument, NotFound

if TYPE_CHECKING:
    import asyncpg

    from mainstay_common.db import Connection

__all__ = ["Price", "Usage", "cost", "price_in_force", "set_price"]

_PER_MILLION = 1_000_000


@dataclass(frozen=True)
class Price:
    tenant: str
    item: str
    version: int
    currency: str
    input_per_mtok: int
    output_per_mtok: int
    cached_per_mtok: int
    per_call: int
    effective_from: datetime

    @classmethod
    def of(cls, row: asyncpg.Record) -> Price:
        return cls(**{name: row[name] for name in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Usage:
    """What one model call or tool call consumed."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    calls: int = 0


def _check_item(item: str) -> str:
    kind, _, name = item.partition(":")
    if kind not in {"model", "tool"} or not name:
        raise InvalidArgument(f"item: {item!r} must be 'model:<name>' or 'tool:<name>'")
    return item


def _per_million(tokens: int, price: int) -> int:
    """``tokens`` at ``price`` per million, rounded up to a whole micro-unit."""
    return -(-tokens * price // _PER_MILLION)


def cost(price: Price, usage: Usage) -> int:
    """The cost of ``usage`` in micro-units (each part rounded up; never negative)."""
    for field in ("input_tokens", "output_tokens", "cached_tokens", "calls"):
        value = getattr(usage, field)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InvalidArgument(f"{field}: must be a non-negative integer, got {value!r}")
    return (
        _per_million(usage.input_tokens, price.input_per_mtok)
        + _per_million(usage.output_tokens, price.output_per_mtok)
        + _per_million(usage.cached_tokens, price.cached_per_mtok)
        + usage.calls * price.per_call
    )


async def set_price(
    conn: Connection,
    *,
    item: str,
    currency: str,
    tenant: str = "",
    input_per_mtok: int = 0,
    output_per_mtok: int = 0,
    cached_per_mtok: int = 0,
    per_call: int = 0,
    effective_from: datetime | None = None,
) -> Price:
    """Add the next version of ``item``'s price (for ``tenant``, or for every tenant)."""
    _check_item(item)
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"price:{tenant}:{item}")
    row = await conn.fetchrow(
        "INSERT INTO prices (tenant, item, version, currency, input_per_mtok, output_per_mtok,"
        " cached_per_mtok, per_call, effective_from)"
        " SELECT $1, $2, coalesce(max(version), 0) + 1, $3, $4, $5, $6, $7, $8"
        " FROM prices WHERE tenant = $1 AND item = $2 RETURNING *",
        tenant,
        item,
        currency,
        input_per_mtok,
        output_per_mtok,
        cached_per_mtok,
        per_call,
        effective_from or datetime.now(UTC),
    )
    assert row is not None
    return Price.of(row)


async def price_in_force(conn: Connection, *, tenant: str, item: str, at: datetime) -> Price:
    """The price of ``item`` for ``tenant`` at ``at``: the tenant's own, else everyone's."""
    _check_item(item)
    row = await conn.fetchrow(
        "SELECT * FROM prices WHERE item = $2 AND tenant IN ($1, '') AND effective_from <= $3"
        " ORDER BY (tenant = $1) DESC, effective_from DESC, version DESC LIMIT 1",
        tenant,
        item,
        at,
    )
    if row is None:
        raise NotFound(f"item: no price for '{item}' in force at {at.isoformat()}")
    return Price.of(row)
