"""A whole pytest session with the plugin and no external servers: the plugin
starts an embedded broker and PostgreSQL for it and stops them at its end."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

INI = """\
[pytest]
asyncio_mode = auto
asyncio_default_fixture_loop_scope = session
asyncio_default_test_loop_scope = session
filterwarnings = error
"""

INNER_TESTS = """\
import json
import os
import re
from pathlib import Path

import asyncpg
from aiokafka.admin import AIOKafkaAdminClient


async def test_uses_the_stack(mainstay_stack, kafka_bootstrap, postgres_dsn, pg_schema, request):
    assert request.node.get_closest_marker("real") is not None
    assert mainstay_stack.kafka_bootstrap == kafka_bootstrap
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap, request_timeout_ms=10000)
    await admin.start()
    try:
        await admin.describe_cluster()
    finally:
        await admin.close()
    connection = await asyncpg.connect(postgres_dsn, timeout=10)
    try:
        schemas = await connection.fetchval(
            "SELECT count(*) FROM information_schema.schemata WHERE schema_name = $1", pg_schema
        )
        vector = await connection.fetchval("SELECT count(*) FROM pg_extension WHERE extname = 'vector'")
    finally:
        await connection.close()
    assert schemas == 1
    assert vector == 1
    Path(os.environ["INNER_OUT"]).write_text(
        json.dumps({"kafka": kafka_bootstrap, "dsn": postgres_dsn})
    )


def test_needs_nothing(request):
    assert request.node.get_closest_marker("real") is None
"""


def _run_inner(folder: Path, out: Path, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAINSTAY_")}
    env.pop("XDG_RUNTIME_DIR", None)  # the embedded PostgreSQL must cope without it
    env["INNER_OUT"] = str(out)
    env["TMPDIR"] = str(tmp)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "mainstay_common.testing.plugin",
            "-p",
            "no:cacheprovider",
            "-q",
            "--strict-markers",
            *args,
        ],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def _refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return False
    except ConnectionRefusedError:
        return True


@pytest.mark.real
def test_a_session_without_servers_gets_an_embedded_stack(tmp_path: Path) -> None:
    (tmp_path / "pytest.ini").write_text(INI)
    (tmp_path / "test_inner.py").write_text(INNER_TESTS)
    out = tmp_path / "out.json"
    # Outside pytest's basetemp, like the plugin's own home (see the plugin).
    inner_tmp = Path(tempfile.mkdtemp(prefix="mainstay-plugin-test-"))
    try:
        result = _run_inner(tmp_path, out, inner_tmp)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "2 passed" in result.stdout
        seen = json.loads(out.read_text())
        assert seen["kafka"] != "127.0.0.1:19092"  # never the developer's default ports
        kafka_port = int(seen["kafka"].rsplit(":", 1)[1])
        pg_port = int(seen["dsn"].rsplit(":", 1)[1].split("/")[0])
        # Stopped and cleaned up at the end of the session.
        assert _refused(kafka_port)
        assert _refused(pg_port)
        assert list(inner_tmp.iterdir()) == []

        deselected = _run_inner(tmp_path, out, inner_tmp, "-m", "not real")
        assert deselected.returncode == 0, deselected.stdout + deselected.stderr
        assert "1 passed, 1 deselected" in deselected.stdout
    finally:
        shutil.rmtree(inner_tmp, ignore_errors=True)


HANGING_TEST = """\
import asyncio

import pytest


async def waits_for_an_answer_that_never_comes(event):
    await event.wait()


@pytest.mark.timeout(12)
async def test_hangs():
    await waits_for_an_answer_that_never_comes(asyncio.Event())
"""


def test_a_test_about_to_time_out_shows_what_its_asyncio_tasks_wait_for(tmp_path: Path) -> None:
    (tmp_path / "pytest.ini").write_text(INI)
    (tmp_path / "test_inner.py").write_text(HANGING_TEST)
    result = _run_inner(tmp_path, tmp_path / "unused.json", tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Timeout (>12.0s) from pytest-timeout" in output
    assert "test_inner.py::test_hangs: about to time out" in output
    # The task's own coroutine chain, down to the line that waits.
    assert "waits_for_an_answer_that_never_comes" in output
    assert "await event.wait()" in output
