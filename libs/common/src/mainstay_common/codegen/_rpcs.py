"""gRPC services and their methods, read from ``schemas/proto``.

The proto files are the contract, so the documents quote them: each ``service``
block's ``rpc`` lines with their request and response types and the ``//``
comment just above them. Protobuf packages are ``mainstay.<pkg>.v<major>``;
``<pkg>`` is the service's folder name with ``_`` for ``-``, or the owner of
its topics (``tools`` for the tools gateway).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from mainstay_common.codegen._proto import PROTO_PACKAGE, proto_files

if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path

__all__ = ["Rpc", "rpcs_in_proto", "service_rpcs"]

_PACKAGE: Final = re.compile(r"^\s*package\s+(?P<name>[\w.]+)\s*;")
_SERVICE: Final = re.compile(r"^\s*service\s+(?P<name>\w+)\s*\{")
_RPC: Final = re.compile(
    r"^\s*rpc\s+(?P<name>\w+)\s*\(\s*(?P<client_stream>stream\s+)?(?P<request>[\w.]+)\s*\)"
    r"\s*returns\s*\(\s*(?P<server_stream>stream\s+)?(?P<response>[\w.]+)\s*\)"
)
_COMMENT: Final = re.compile(r"^\s*//\s?(?P<text>.*)$")


@dataclass(frozen=True)
class Rpc:
    """One method: ``service`` is the full name (``mainstay.memory.v1.MemoryService``)."""

    service: str
    name: str
    request: str
    response: str
    summary: str = ""


def service_rpcs(proto_root: Path, packages: Iterable[str]) -> list[Rpc]:
    """The methods of every proto service under ``mainstay/<pkg>/`` for the given packages."""
    wanted = set(packages)
    rpcs: list[Rpc] = []
    for relative in proto_files(proto_root):
        parts = relative.parts
        if len(parts) > 2 and parts[0] == PROTO_PACKAGE and parts[1] in wanted:
            text = (proto_root / relative).read_text(encoding="utf-8")
            rpcs.extend(rpcs_in_proto(text))
    return rpcs


def rpcs_in_proto(text: str) -> list[Rpc]:
    """The methods of every ``service`` in one ``.proto`` file, in declaration order."""
    package = ""
    service = ""
    comment: list[str] = []
    rpcs: list[Rpc] = []
    for line in text.splitlines():
        if match := _PACKAGE.match(line):
            package = match["name"]
        elif match := _SERVICE.match(line):
            service = f"{package}.{match['name']}" if package else match["name"]
        elif match := _COMMENT.match(line):
            comment.append(match["text"].strip())
            continue
        elif service and (match := _RPC.match(line)):
            request = ("stream " if match["client_stream"] else "") + match["request"]
            response = ("stream " if match["server_stream"] else "") + match["response"]
            rpcs.append(Rpc(service, match["name"], request, response, " ".join(comment).strip()))
        elif line.strip() == "}":
            service = "" if line.startswith("}") else service
        comment = []
    return rpcs
