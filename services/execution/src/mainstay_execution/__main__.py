"""``python -m mainstay_execution``: run one execution instance until SIGTERM/SIGINT."""

from __future__ import annotations

from mainstay_common.runner import run_service
from mainstay_execution.app import create_app
from mainstay_execution.settings import ExecutionSettings


def main() -> None:
    # Not on uvloop (fast_loop): memory recall goes through grpc.aio, which needs asyncio's loop.
    run_service("execution", ExecutionSettings, create_app)


if __name__ == "__main__":
    main()
