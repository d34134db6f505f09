"""gen writes, check reports: stale files, breaking schema changes, buf lint."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from typing import TYPE_CHECKING

import pytest
import yaml
from pydantic import BaseModel

from mainstay_common.codegen import CodegenError, check, committed_files, find_root, generate
from mainstay_common.codegen.__main__ import main
from mainstay_contracts import TopicRegistry, TopicSpec

if TYPE_CHECKING:
    from pathlib import Path

PROBE_SCHEMA = "schemas/events/supervisor.cmd.probe.v1.json"
TOPICS = "deploy/kafka/topics.yaml"


def test_the_committed_files_are_current(repo_root: Path) -> None:
    report = check(repo_root)
    assert report.stale == []
    assert report.breaking == []
    assert report.problems == []
    assert report.ok


def test_check_cli_passes_on_the_repository(
    repo_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", "--root", str(repo_root)]) == 0
    assert capsys.readouterr().out == "generated files are current\n"


def test_check_fails_on_a_tampered_copy(
    repo_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    topics = repo_copy / TOPICS
    topics.write_text(topics.read_text().replace("partitions: 3", "partitions: 30"))
    (repo_copy / "schemas/events/stray.txt").write_text("not a schema")  # not generator-owned

    assert main(["check", "--root", str(repo_copy)]) == 1
    out = capsys.readouterr().out
    assert "Generated files are stale; run `./dev gen` and commit the result:" in out
    assert f"  changed  {TOPICS}\n" in out
    assert "-    partitions: 30\n+    partitions: 3\n" in out
    assert "stray.txt" not in out

    assert main(["gen", "--root", str(repo_copy)]) == 0
    assert capsys.readouterr().out == f"wrote    {TOPICS}\n"
    assert main(["check", "--root", str(repo_copy)]) == 0
    assert main(["gen", "--root", str(repo_copy)]) == 0
    assert capsys.readouterr().out.endswith("generated files are up to date\n")


def test_missing_and_extra_files_are_stale(repo_copy: Path) -> None:
    (repo_copy / PROBE_SCHEMA).unlink()
    leftover = repo_copy / "libs/proto/src/mainstay/old/v1/old_pb2.py"
    leftover.parent.mkdir(parents=True)
    leftover.write_text("# generated once\n")
    (leftover.parent / "__pycache__").mkdir()

    report = check(repo_copy)
    assert [(d.status, d.path) for d in report.stale] == [
        ("extra", "libs/proto/src/mainstay/old/v1/old_pb2.py"),
        ("missing", PROBE_SCHEMA),
    ]
    assert not report.ok

    report = generate(repo_copy)
    assert report.written == [PROBE_SCHEMA]
    assert report.removed == ["libs/proto/src/mainstay/old/v1/old_pb2.py"]
    assert not (repo_copy / "libs/proto/src/mainstay/old").exists()
    assert check(repo_copy).ok


def tamper_probe_schema(root: Path) -> None:
    path = root / PROBE_SCHEMA
    schema = json.loads(path.read_text())
    schema["properties"]["fail_attempts"] = {"type": "string"}
    path.write_text(json.dumps(schema))


def test_check_reports_a_breaking_change(
    repo_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tamper_probe_schema(repo_copy)
    assert main(["check", "--root", str(repo_copy)]) == 1
    out = capsys.readouterr().out
    assert f"  changed  {PROBE_SCHEMA}\n" in out
    assert "Breaking changes to event schemas" in out
    assert (
        "  supervisor.cmd.probe.v1: field 'fail_attempts' changed type string -> integer\n" in out
    )


def test_gen_refuses_a_breaking_change_unless_allowed(
    repo_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tamper_probe_schema(repo_copy)
    tampered = (repo_copy / PROBE_SCHEMA).read_bytes()
    assert main(["gen", "--root", str(repo_copy)]) == 1
    out = capsys.readouterr().out
    assert "field 'fail_attempts' changed type string -> integer" in out
    assert "Nothing was written" in out
    assert (repo_copy / PROBE_SCHEMA).read_bytes() == tampered

    assert main(["gen", "--root", str(repo_copy), "--allow-breaking"]) == 0
    assert capsys.readouterr().out == f"wrote    {PROBE_SCHEMA}\n"
    assert check(repo_copy).ok


def test_a_topic_that_is_no_longer_registered_is_breaking(repo_copy: Path) -> None:
    gone = repo_copy / "schemas/events/supervisor.evt.gone.v1.json"
    shutil.copy2(repo_copy / PROBE_SCHEMA, gone)
    report = check(repo_copy)
    assert [str(c) for c in report.breaking] == [
        "supervisor.evt.gone.v1: is committed but no longer registered; removing a topic "
        "within v1 is breaking (keep it registered, or delete its committed schema "
        "deliberately once no producer or consumer uses it)"
    ]
    assert [(d.status, d.path) for d in report.stale] == [
        ("extra", str(gone.relative_to(repo_copy)))
    ]
    assert generate(repo_copy).breaking
    assert gone.exists()
    assert generate(repo_copy, allow_breaking=True).removed == [str(gone.relative_to(repo_copy))]


def test_an_unreadable_committed_schema_is_reported(repo_copy: Path) -> None:
    (repo_copy / PROBE_SCHEMA).write_text("{ not json")
    report = check(repo_copy)
    assert report.problems[0].startswith(f"{PROBE_SCHEMA}: not valid JSON")
    assert not report.ok
    assert not generate(repo_copy).written
    assert generate(repo_copy, allow_breaking=True).written == [PROBE_SCHEMA]


def test_gen_and_check_cover_protobuf_output(repo_copy: Path, demo_proto: Path) -> None:
    shutil.copytree(
        demo_proto / "mainstay", repo_copy / "schemas/proto/mainstay", dirs_exist_ok=True
    )
    report = check(repo_copy)
    assert {d.path for d in report.stale} >= {
        "libs/proto/src/mainstay/demo/v1/demo_pb2.py",
        "libs/proto/src/mainstay/demo/v1/demo_pb2_grpc.pyi",
    }
    generate(repo_copy)
    assert check(repo_copy).ok
    generated = repo_copy / "libs/proto/src/mainstay/demo/v1/demo_pb2.py"
    generated.write_text(generated.read_text() + "# edited\n")
    assert [d.path for d in check(repo_copy).stale] == [
        "libs/proto/src/mainstay/demo/v1/demo_pb2.py"
    ]

    shutil.rmtree(repo_copy / "schemas/proto/mainstay/demo")
    assert {d.status for d in check(repo_copy).stale} == {"extra"}
    assert len(generate(repo_copy).removed) == 6
    assert not (repo_copy / "libs/proto/src/mainstay/demo").exists()
    assert check(repo_copy).ok


def test_buf_lint_runs_when_available(repo_copy: Path, demo_proto: Path) -> None:
    assert check(repo_copy).lint is None  # no protos: nothing to lint
    shutil.copytree(
        demo_proto / "mainstay", repo_copy / "schemas/proto/mainstay", dirs_exist_ok=True
    )
    generate(repo_copy)
    buf = repo_copy / ".tools/bin/buf"
    buf.parent.mkdir(parents=True)
    buf.write_text("#!/bin/sh\necho 'demo.proto:1:1:bad name (lint)'\nexit 100\n")
    buf.chmod(0o755)
    report = check(repo_copy)
    assert report.stale == []
    assert report.lint is not None
    assert not report.lint.ok
    assert "bad name" in report.lint.output
    assert not report.ok


def test_asyncapi_documents_come_from_each_service(
    repo_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = repo_copy / "services/demo-svc/src/mainstay_codegen_demo_svc"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "asyncapi.py").write_text(
        textwrap.dedent(
            """
            def asyncapi_document():
                return {
                    "asyncapi": "3.0.0",
                    "info": {"title": "demo", "version": "1.0.0"},
                    "channels": {"supervisor.cmd.probe.v1": {"address": "supervisor.cmd.probe.v1"}},
                }
            """
        )
    )
    monkeypatch.setattr(sys, "path", list(sys.path))
    try:
        assert generate(repo_copy).written == ["schemas/asyncapi/demo-svc.yaml"]
        document = yaml.safe_load((repo_copy / "schemas/asyncapi/demo-svc.yaml").read_text())
        assert document["info"] == {"title": "demo", "version": "1.0.0"}
        assert check(repo_copy).ok
    finally:
        for name in [m for m in sys.modules if m.startswith("mainstay_codegen_demo_svc")]:
            del sys.modules[name]


class Account(BaseModel):
    account_id: str
    balance: int = 0


class AccountV1Broken(BaseModel):
    account_id: str
    balance: str = "0"


def registry_with(model: type[BaseModel]) -> TopicRegistry:
    registry = TopicRegistry()
    registry.register(
        TopicSpec(
            name="ledger.evt.account.v1",
            owner="ledger",
            kind="evt",
            key_field="account_id",
            payload=model,
        )
    )
    return registry


def git(root: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=test", "-c", "user.email=test@example.invalid", *args],
        cwd=root,
        check=True,
        capture_output=True,
        timeout=60,
    )


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_check_against_a_git_base_catches_a_regenerated_breaking_change(repo_copy: Path) -> None:
    generate(repo_copy, registry=registry_with(Account), allow_breaking=True)
    git(repo_copy, "init", "-q")
    git(repo_copy, "add", "-A")
    git(repo_copy, "commit", "-q", "-m", "base")

    # Someone regenerates past the guard: the tree is consistent again...
    broken = registry_with(AccountV1Broken)
    generate(repo_copy, registry=broken, allow_breaking=True)
    assert check(repo_copy, registry=broken).ok
    # ...but the merge base still knows the old contract.
    report = check(repo_copy, registry=broken, base="HEAD")
    assert [str(c) for c in report.breaking] == [
        "ledger.evt.account.v1: field 'balance' changed type integer -> string"
    ]


def test_committed_files_only_lists_generator_owned_files(repo_root: Path) -> None:
    owned = committed_files(repo_root)
    assert "deploy/kafka/topics.yaml" in owned
    assert PROBE_SCHEMA in owned
    assert "schemas/proto/buf.yaml" not in owned
    assert all("__pycache__" not in path for path in owned)


def test_find_root_walks_up(repo_root: Path, tmp_path: Path) -> None:
    assert find_root(repo_root / "libs/common/src") == repo_root
    with pytest.raises(CodegenError, match="no Mainstay workspace"):
        find_root(tmp_path)


def test_module_entry_point(repo_root: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mainstay_common.codegen", "check"],
        cwd=repo_root / "libs",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == "generated files are current\n"
