from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mainstay_common.codegen import find_root

REPO = find_root(Path(__file__).resolve().parent)


@pytest.fixture
def repo_root() -> Path:
    return REPO


@pytest.fixture
def repo_copy(tmp_path: Path) -> Path:
    """The generator-owned parts of the repository, copied to a scratch root."""
    root = tmp_path / "repo"
    root.mkdir()
    shutil.copy2(REPO / "pyproject.toml", root / "pyproject.toml")
    shutil.copy2(REPO / "README.md", root / "README.md")  # holds the generated maps
    ignore = shutil.ignore_patterns("__pycache__", "tests")
    # services/ too: a service's AsyncAPI hook is what makes schemas/asyncapi/<svc>.yaml expected
    for relative in ("schemas", "deploy/kafka", "libs/proto/src/mainstay", "services"):
        if (REPO / relative).exists():
            shutil.copytree(REPO / relative, root / relative, ignore=ignore)
    return root


@pytest.fixture
def demo_proto(tmp_path: Path) -> Path:
    """A proto root holding one small service, ``mainstay.demo.v1``."""
    proto_root = tmp_path / "proto"
    package = proto_root / "mainstay" / "demo" / "v1"
    package.mkdir(parents=True)
    (package / "demo.proto").write_text(
        """syntax = "proto3";

package mainstay.demo.v1;

import "google/protobuf/timestamp.proto";

message PingRequest {
  string text = 1;
  google.protobuf.Timestamp sent_at = 2;
}

message PingResponse {
  string text = 1;
}

service DemoService {
  rpc Ping(PingRequest) returns (PingResponse);
}
""",
        encoding="utf-8",
    )
    return proto_root
