"""``python -m mainstay_memory``: run one memory service instance until SIGTERM/SIGINT."""

from __future__ import annotations

from mainstay_common.runner import run_service
from mainstay_memory.app import create_app
from mainstay_memory.settings import MemorySettings


def main() -> None:
    run_service("memory", MemorySettings, create_app, fast_loop=True)


if __name__ == "__main__":
    main()
