"""``python -m mainstay_identity``: run one identity service instance until SIGTERM/SIGINT."""

from __future__ import annotations

from mainstay_common.runner import run_service
from mainstay_identity.app import create_app
from mainstay_identity.settings import IdentitySettings


def main() -> None:
    run_service("identity", IdentitySettings, create_app, fast_loop=True)


if __name__ == "__main__":
    main()
