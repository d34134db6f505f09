"""The broker stopped after a batch and started again, empty."""

from __future__ import annotations

import pytest

from mainstay_execution.testing.faults import broker_restart

pytestmark = pytest.mark.timeout(420)


async def test_the_broker_back_empty_gets_what_was_committed_meanwhile_and_runs_a_new_batch() -> (
    None
):
    figures = await broker_restart(tasks_before=2, tasks_after=3, down_s=5.0, wait_s=120)
    print(figures.line())
    assert figures.details["batch_before_completed"], figures.line()
    # Committed to the supervisor's outbox while the broker was away, published on its
    # return to the topic created again, and read by execution.
    assert figures.details["outbox_republished_after_restart"], figures.line()
    assert figures.details["execution_alive"], figures.line()
    # Created again by their owners, with their declared partitions, not by the first
    # client that asked for them with the broker's default.
    assert figures.details["topics_with_other_partitions"] == [], figures.line()
    assert figures.acknowledged == figures.sent, figures.line()
    assert figures.processed == figures.sent, figures.line()
    assert figures.details["ledger_balanced"], figures.line()
    assert (figures.lost, figures.duplicated) == (0, 0), figures.line()
