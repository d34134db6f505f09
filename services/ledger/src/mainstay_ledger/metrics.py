"""The ledger's Prometheus families: spend, holds, denials and exhausted holds."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import Counter

from mainstay_common.db import after_commit

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = ["LedgerMetrics"]


class LedgerMetrics:
    """Counted once the posting's transaction commits (a rolled-back one counts nothing)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._spend = Counter(
            "mainstay_ledger_spend_micros",
            "Usage posted, in micro-units of the currency.",
            ["tenant", "kind", "currency"],
            registry=registry,
        )
        self._holds = Counter(
            "mainstay_ledger_holds",
            "Holds asked for, by outcome (opened or denied).",
            ["tenant", "outcome"],
            registry=registry,
        )
        self._denials = Counter(
            "mainstay_ledger_denials",
            "Holds denied because a hard budget limit would break.",
            ["tenant"],
            registry=registry,
        )
        self._exhausted = Counter(
            "mainstay_ledger_holds_exhausted",
            "Holds that ran out while their task was still spending.",
            ["tenant"],
            registry=registry,
        )

    def spend(self, tenant: str, kind: str, currency: str, micros: int) -> None:
        after_commit(
            lambda: self._spend.labels(tenant=tenant, kind=kind, currency=currency).inc(micros)
        )

    def hold(self, tenant: str, *, denied: bool) -> None:
        def count() -> None:
            self._holds.labels(tenant=tenant, outcome="denied" if denied else "opened").inc()
            if denied:
                self._denials.labels(tenant=tenant).inc()

        after_commit(count)

    def exhausted(self, tenant: str) -> None:
        after_commit(lambda: self._exhausted.labels(tenant=tenant).inc())
