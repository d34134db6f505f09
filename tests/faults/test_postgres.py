"""PostgreSQL stopped and started again under a stream of tasks."""

from __future__ import annotations

import pytest

from mainstay_execution.testing.faults import postgres_restart

pytestmark = pytest.mark.timeout(240)


async def test_postgres_away_for_seconds_loses_nothing_and_repeats_nothing() -> None:
    figures = await postgres_restart(tasks_before=3, tasks_during=3, down_s=4.0, wait_s=60)
    print(figures.line())
    assert set(figures.details["not_ready_while_down"]) == set(figures.details["services"])
    assert figures.details["ready_again"], figures.line()
    assert figures.acknowledged == figures.sent, figures.line()
    assert figures.processed == figures.sent, figures.line()
    assert figures.details["ledger_balanced"], figures.line()
    assert (figures.lost, figures.duplicated) == (0, 0), figures.line()
