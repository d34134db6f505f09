"""A small MCP server for the tests, built with the SDK's MCPServer.

Run as a script it serves stdio (the gateway starts it as a subprocess);
:func:`build` gives one to serve over streamable HTTP in the test process.
It counts calls per tool, so a test can see how often the gateway called it.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from dataclasses import dataclass, field

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations


@dataclass
class Demo:
    mcp: MCPServer
    calls: Counter[str] = field(default_factory=Counter)


def build() -> Demo:
    mcp = MCPServer("demo")
    demo = Demo(mcp=mcp)

    @mcp.tool(annotations=ToolAnnotations(read_only_hint=True))
    def add(a: int, b: int) -> int:
        """Add two integers."""
        demo.calls["add"] += 1
        return a + b

    @mcp.tool()
    def fail(reason: str) -> str:
        """Always refuses."""
        demo.calls["fail"] += 1
        raise ToolError(f"cannot do that: {reason}")

    @mcp.tool()
    def whoami(ctx: Context) -> str:
        """The Authorization header this server received."""
        return (ctx.headers or {}).get("authorization", "")

    @mcp.tool()
    def env(name: str) -> str:
        """An environment variable of the server process."""
        return os.environ.get(name, "")

    @mcp.tool()
    def shout(text: str) -> str:
        """Write a line to stderr (and the token of the environment, if any)."""
        token = os.environ.get("DEMO_TOKEN")
        print(f"{text} token={token}" if token else text, file=sys.stderr, flush=True)
        return "shouted"

    @mcp.tool(annotations=ToolAnnotations(read_only_hint=True))
    def stats() -> dict[str, int]:
        """How often each tool was called."""
        return dict(demo.calls)

    @mcp.tool(name="odd name/1")
    def odd() -> str:
        """A name the gateway has to clean up."""
        return "odd"

    return demo


if __name__ == "__main__":
    sys.exit(build().mcp.run("stdio"))
