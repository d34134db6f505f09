"""The protobuf pipeline: importable, typed, deterministic modules under mainstay/<svc>/v1."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

from mainstay_common.codegen import CodegenError, generate_proto

if TYPE_CHECKING:
    from pathlib import Path

SKELETON = {
    "mainstay/__init__.py",
    "mainstay/py.typed",
}


def write_tree(files: dict[str, bytes], out: Path) -> None:
    for relative, content in files.items():
        target = out / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)


def test_no_protos_gives_just_the_package_skeleton(tmp_path: Path) -> None:
    assert set(generate_proto(tmp_path / "absent")) == SKELETON
    (tmp_path / "mainstay").mkdir()
    assert set(generate_proto(tmp_path)) == SKELETON


def test_a_proto_becomes_an_importable_package(demo_proto: Path, tmp_path: Path) -> None:
    files = generate_proto(demo_proto)
    assert set(files) == SKELETON | {
        "mainstay/demo/__init__.py",
        "mainstay/demo/v1/__init__.py",
        "mainstay/demo/v1/demo_pb2.py",
        "mainstay/demo/v1/demo_pb2.pyi",
        "mainstay/demo/v1/demo_pb2_grpc.py",
        "mainstay/demo/v1/demo_pb2_grpc.pyi",
    }
    out = tmp_path / "out"
    write_tree(files, out)
    program = (
        "import mainstay\n"
        "from mainstay.demo.v1 import demo_pb2, demo_pb2_grpc\n"
        f"assert mainstay.__file__.startswith({str(out)!r}), mainstay.__file__\n"
        "request = demo_pb2.PingRequest(text='hi')\n"
        "assert demo_pb2.PingRequest.FromString(request.SerializeToString()).text == 'hi'\n"
        "assert demo_pb2_grpc.DemoServiceStub and demo_pb2_grpc.DemoServiceServicer\n"
    )
    env = dict(os.environ, PYTHONPATH=str(out))
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", program],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_proto_output_is_deterministic(demo_proto: Path) -> None:
    assert generate_proto(demo_proto) == generate_proto(demo_proto)


def test_generated_stubs_pass_the_projects_mypy(
    demo_proto: Path, tmp_path: Path, repo_root: Path
) -> None:
    out = tmp_path / "out"
    write_tree(generate_proto(demo_proto), out)
    stubs = sorted(str(path) for path in out.rglob("*.pyi"))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--config-file",
            str(repo_root / "pyproject.toml"),
            "--cache-dir",
            str(tmp_path / "mypy-cache"),
            *stubs,
        ],
        capture_output=True,
        text=True,
        cwd=out,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_protoc_errors_are_reported(tmp_path: Path) -> None:
    package = tmp_path / "mainstay" / "bad" / "v1"
    package.mkdir(parents=True)
    (package / "bad.proto").write_text('syntax = "proto3";\nmessage {\n', encoding="utf-8")
    with pytest.raises(CodegenError, match=r"protoc failed \(exit 1\)"):
        generate_proto(tmp_path)
