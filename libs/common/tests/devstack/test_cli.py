"""The terminal interface: `up` in one process, its stack outliving it, `down` in another."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import TYPE_CHECKING

import psutil
import pytest

from mainstay_common.devstack import BROKER, EmbeddedStack, ProcessRecord
from mainstay_common.devstack._broker import broker_answers
from mainstay_common.devstack._postgres import postgres_answers
from mainstay_common.devstack._process import save_record

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

pytestmark = pytest.mark.real


def _cli(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mainstay_common.devstack", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _dead_pid_record(name: str) -> ProcessRecord:
    """A record of a process that has exited, as left behind by a crash or a reboot."""
    probe = subprocess.Popen([sys.executable, "-c", "pass"])
    start = psutil.Process(probe.pid).create_time()
    probe.wait(10)
    return ProcessRecord(name, probe.pid, start, "127.0.0.1:1")


async def test_cli_up_status_logs_down(
    fake_repo: Path,
    home_factory: Callable[[], Path],
    free_ports: Callable[[], tuple[int, int]],
) -> None:
    home = home_factory()
    kafka_port, pg_port = free_ports()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAINSTAY_")}
    env["MAINSTAY_HOME"] = str(home)
    env["COLUMNS"] = "200"  # keep each status row on one line
    save_record(home / "pids" / f"{BROKER}.pid", _dead_pid_record(BROKER))

    up = _cli(
        "up",
        "--kafka-port",
        str(kafka_port),
        "--pg-port",
        str(pg_port),
        cwd=fake_repo,
        env=env,
    )
    assert up.returncode == 0, up.stdout + up.stderr
    assert "removed the stale record" in up.stdout
    assert f"export MAINSTAY_KAFKA_BOOTSTRAP=127.0.0.1:{kafka_port}" in up.stdout

    # The CLI has exited; what it started keeps serving.
    assert await broker_answers(f"127.0.0.1:{kafka_port}")
    assert await postgres_answers(f"postgresql://postgres@127.0.0.1:{pg_port}/postgres")
    assert (home / "logs" / "fake-svc.log").exists()
    # The key files only; the fake workspace has no identity service to sign a token.
    assert (home / "identity.key").exists()
    assert (home / "vault.key").exists()
    assert not (home / "jwks.json").exists()
    assert not (home / "signing-key.pem").exists()
    assert not (home / "admin.token").exists()
    assert "no identity service" in up.stdout

    status = _cli("status", cwd=fake_repo, env=env)
    assert status.returncode == 0
    lines = {line.split()[0]: line.split()[1] for line in status.stdout.splitlines()[1:]}
    assert lines == {"broker": "up", "postgres": "up", "fake-svc": "up"}

    logs = _cli("logs", "broker", "-n", "5", cwd=fake_repo, env=env)
    assert logs.returncode == 0
    assert f"127.0.0.1:{kafka_port}" in logs.stdout
    missing = _cli("logs", "nope", cwd=fake_repo, env=env)
    assert missing.returncode == 1

    down = _cli("down", cwd=fake_repo, env=env)
    assert down.returncode == 0, down.stdout + down.stderr
    assert not await broker_answers(f"127.0.0.1:{kafka_port}", timeout_s=1.0)

    status = _cli("status", cwd=fake_repo, env=env)
    assert status.returncode == 0
    assert [line.split()[1] for line in status.stdout.splitlines()[1:]] == ["down"] * 3
    stack = EmbeddedStack(home, fake_repo)
    assert stack.home.recorded_names() == []
