"""``python -m mainstay_ledger``: run one ledger instance until SIGTERM/SIGINT."""

from __future__ import annotations

from mainstay_common.runner import run_service
from mainstay_ledger.app import create_app
from mainstay_ledger.settings import LedgerSettings


def main() -> None:
    run_service("ledger", LedgerSettings, create_app, fast_loop=True)


if __name__ == "__main__":
    main()
