"""The price book: versions in force by time, tenant overrides, and whole micro-units."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import pytest_asyncio

from mainstay_common.db import LIBRARY_MIGRATIONS, Database, load_migrations
from mainstay_common.errors import InvalidArgument, NotFound
from mainstay_common.settings import PostgresSettings
from mainstay_ledger import pricebook
from mainstay_ledger.pricebook import Price, Usage, cost, price_in_force, set_price

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

pytestmark = pytest.mark.real

MIGRATIONS = Path(pricebook.__file__).parent / "store" / "migrations"


@pytest_asyncio.fixture(loop_scope="session")
async def database(postgres_dsn: str) -> AsyncIterator[Database]:
    schema = f"ledger_test_{uuid.uuid4().hex[:8]}"
    async with Database(PostgresSettings(dsn=postgres_dsn), schema=schema) as db:
        await db.migrate(LIBRARY_MIGRATIONS, load_migrations(MIGRATIONS, namespace="ledger"))
        try:
            yield db
        finally:
            await db.execute(f'DROP SCHEMA "{schema}" CASCADE')


async def test_usage_is_priced_with_the_version_in_force_when_it_happened(
    database: Database,
) -> None:
    now = datetime.now(UTC)
    async with database.pool.acquire() as conn:
        v1 = await set_price(
            conn,
            item="model:gpt",
            currency="USD",
            input_per_mtok=2_500_000,
            output_per_mtok=10_000_000,
            effective_from=now - timedelta(days=30),
        )
        v2 = await set_price(
            conn,
            item="model:gpt",
            currency="USD",
            input_per_mtok=2_000_000,
            output_per_mtok=8_000_000,
            effective_from=now + timedelta(days=1),
        )
        assert (v1.version, v2.version) == (1, 2)
        today = await price_in_force(conn, tenant="acme", item="model:gpt", at=now)
        tomorrow = await price_in_force(
            conn, tenant="acme", item="model:gpt", at=now + timedelta(days=2)
        )
        assert (today.version, tomorrow.version) == (1, 2)
        usage = Usage(input_tokens=1000, output_tokens=500)
        assert cost(today, usage) == 2_500 + 5_000
        assert cost(tomorrow, usage) == 2_000 + 4_000

        # A tenant's own price overrides everyone's.
        await set_price(
            conn,
            tenant="acme",
            item="model:gpt",
            currency="USD",
            input_per_mtok=1_000_000,
            effective_from=now - timedelta(days=1),
        )
        own = await price_in_force(conn, tenant="acme", item="model:gpt", at=now)
        other = await price_in_force(conn, tenant="globex", item="model:gpt", at=now)
        assert (own.tenant, own.input_per_mtok, other.version) == ("acme", 1_000_000, 1)

        with pytest.raises(NotFound, match="no price for 'tool:search'"):
            await price_in_force(conn, tenant="acme", item="tool:search", at=now)
        with pytest.raises(NotFound, match="no price for 'model:gpt'"):
            await price_in_force(conn, tenant="x", item="model:gpt", at=now - timedelta(days=60))
        with pytest.raises(InvalidArgument, match="item"):
            await set_price(conn, item="gpt", currency="USD")


def _price(**fields: int) -> Price:
    base = {"input_per_mtok": 0, "output_per_mtok": 0, "cached_per_mtok": 0, "per_call": 0}
    return Price(
        tenant="",
        item="model:m",
        version=1,
        currency="USD",
        effective_from=datetime.now(UTC),
        **(base | fields),
    )


def test_costs_round_up_to_whole_micro_units_per_part() -> None:
    price = _price(input_per_mtok=3, output_per_mtok=1_000_001, cached_per_mtok=1, per_call=7)
    assert cost(price, Usage(input_tokens=1)) == 1  # 3e-6 micro-units still cost one
    assert cost(price, Usage(output_tokens=1_000_000)) == 1_000_001
    assert cost(price, Usage(cached_tokens=0, calls=3)) == 21
    assert cost(price, Usage()) == 0


@pytest.mark.parametrize("bad", [-1, 1.5, True, "10"])
def test_bad_usage_is_refused_naming_the_field(bad: object) -> None:
    with pytest.raises(InvalidArgument, match="output_tokens"):
        cost(_price(), Usage(output_tokens=bad))  # type: ignore[arg-type]


async def test_the_database_prices_usage_exactly_as_the_python_formula(
    database: Database,
) -> None:
    """``price_usage`` (the SQL the posting path uses) and :func:`pricebook.cost` agree on
    random prices and usage, rounding included, and pick the same version."""
    rng = random.Random(11)
    now = datetime.now(UTC)
    async with database.pool.acquire() as conn:
        for n in range(200):
            item = f"model:m{n}"
            price = await set_price(
                conn,
                item=item,
                currency="EUR",
                tenant=rng.choice(["", "acme"]),
                input_per_mtok=rng.choice([0, 1, 999_999, rng.randrange(10**12)]),
                output_per_mtok=rng.randrange(10**9),
                cached_per_mtok=rng.randrange(10**7),
                per_call=rng.randrange(10**6),
                effective_from=now - timedelta(seconds=1),
            )
            usage = Usage(
                input_tokens=rng.choice([0, 1, rng.randrange(10**7)]),
                output_tokens=rng.randrange(10**6),
                cached_tokens=rng.randrange(10**6),
                calls=rng.randrange(5),
            )
            row = await conn.fetchrow(
                "SELECT * FROM price_usage($1, $2, $3, $4, $5, $6, $7)",
                "acme",
                item,
                now,
                usage.input_tokens,
                usage.output_tokens,
                usage.cached_tokens,
                usage.calls,
            )
            assert row is not None
            assert (int(row["cost"]), row["version"], row["currency"]) == (
                cost(price, usage),
                price.version,
                "EUR",
            )
        missing = await conn.fetch(
            "SELECT * FROM price_usage('acme', 'model:none', now(), 1, 1, 1, 1)"
        )
        assert missing == []
