"""``python -m mainstay_tools_gateway``: run one tools gateway instance until SIGTERM/SIGINT."""

from __future__ import annotations

from mainstay_common.runner import run_service
from mainstay_tools_gateway.app import create_app
from mainstay_tools_gateway.settings import ToolsGatewaySettings


def main() -> None:
    run_service("tools-gateway", ToolsGatewaySettings, create_app, fast_loop=True)


if __name__ == "__main__":
    main()
