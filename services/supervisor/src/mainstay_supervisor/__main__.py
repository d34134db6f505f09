"""``python -m mainstay_supervisor``: run one supervisor instance until SIGTERM/SIGINT."""

from __future__ import annotations

from mainstay_common.runner import run_service
from mainstay_supervisor.app import create_app
from mainstay_supervisor.settings import SupervisorSettings


def main() -> None:
    run_service("supervisor", SupervisorSettings, create_app, fast_loop=True)


if __name__ == "__main__":
    main()
