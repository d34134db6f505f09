"""``python -m mainstay_execution``: run one execution instance until SIGTERM/SIGINT."""

from __future__ import annotations

from mainstay_common.runner import run_service
from mainstay_execution.app import create_app
from mainstay_execution.settings import ExecutionSettings


def main() -> None:
    run_service("execution", ExecutionSettings, create_app, fast_loop=True)


if __name__ == "__main__":
    main()
