"""An execution instance frozen (SIGSTOP) mid-batch, then woken (SIGCONT)."""

from __future__ import annotations

import pytest

from mainstay_execution.testing.faults import frozen_instance

pytestmark = pytest.mark.timeout(600)


async def test_a_frozen_instance_loses_its_tasks_to_the_other_and_cannot_write_when_it_wakes() -> (
    None
):
    # Real Kafka expires a frozen member's session; the embedded broker sometimes keeps
    # a member frozen right after a rebalance in its group until it wakes
    # (docs/guarantees.md). Then nothing moved, so the fault is tried once more on a
    # fresh mesh; each try must lose and repeat nothing all the same.
    for _ in range(2):
        figures = await frozen_instance(tasks=6, wait_s=90)
        print(figures.line())
        assert figures.details["tasks_on_frozen_instance"] > 0, figures.line()
        assert figures.processed == figures.sent, figures.line()
        assert figures.details["ledger_balanced"], figures.line()
        assert (figures.lost, figures.duplicated) == (0, 0), figures.line()
        if figures.details["partitions_moved"]:
            break
    else:
        pytest.skip("twice the embedded broker kept the frozen instance in its group")
    assert figures.details["tasks_resumed_elsewhere"]
    assert figures.details["fenced_writes_refused"] > 0
