"""A minimal HTTP tool for ``bench/tools.py``: ``POST /echo`` answers ``{"echo": <body>}``.

Run as ``python bench/_echo_tool.py PORT``; it serves until terminated.
"""

from __future__ import annotations

import json
import sys

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request  # noqa: TC002 - Starlette reads the annotation
from starlette.responses import JSONResponse
from starlette.routing import Route


async def echo(request: Request) -> JSONResponse:
    body = await request.body()
    return JSONResponse({"echo": json.loads(body) if body else None})


app = Starlette(routes=[Route("/echo", echo, methods=["POST"])])

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
