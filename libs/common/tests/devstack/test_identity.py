"""The identity service starts first, signs ``admin.token``, and the others follow it.

The workspace here holds a fake ``identity`` (an HTTP server answering
``/readyz`` on ``IDENTITY_HTTP_PORT``, registering principals and issuing
tokens for their secrets, which it forgets when it stops; and a ``bootstrap``
module that writes the token) and a fake consumer service (and, for one test,
a fake ``execution`` service that mails) that reports what it was started with,
so these tests check the stack's orchestration; the real bootstrap is tested
in ``services/identity/tests/test_bootstrap.py``. The broker and PostgreSQL are
the test session's, attached as external servers.
"""

from __future__ import annotations

import asyncio
import socket
from typing import TYPE_CHECKING

import pytest

from mainstay_common.devstack import EmbeddedStack, StackError, free_port
from mainstay_common.devstack._process import live_process, load_record

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

IDENTITY_MAIN = """\
import http.server
import json
import os
import signal
import sys
import urllib.parse
import uuid

MODE = {mode!r}
if MODE == "crash":
    print("fake identity: no key secret, giving up", flush=True)
    sys.exit(3)


SECRETS = {{}}


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        ready = self.path == "/readyz" and MODE == "ok"
        self.send_response(200 if ready else 503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _answer(self, status, document):
        body = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _body(self):
        return self.rfile.read(int(self.headers.get("Content-Length", "0")))

    def do_PUT(self):
        body = json.loads(self._body())
        if self.headers.get("Authorization") != "Bearer fake-token":
            return self._answer(401, {{}})
        return self._answer(201, {{"kind": body["kind"]}})

    def do_POST(self):
        form = urllib.parse.parse_qs(self._body().decode())
        if self.path == "/oauth/token":
            client_id, secret = form["client_id"][0], form["client_secret"][0]
            granted = SECRETS.get(client_id) == secret
            return self._answer(200 if granted else 401, {{"access_token": "t"}})
        if self.headers.get("Authorization") != "Bearer fake-token":
            return self._answer(401, {{}})
        parts = self.path.strip("/").split("/")  # v1/tenants/<t>/principals/<name>/secret
        client_id = parts[2] + "/" + parts[4]
        SECRETS[client_id] = uuid.uuid4().hex
        return self._answer(200, {{"client_id": client_id, "client_secret": SECRETS[client_id]}})

    def log_message(self, *args):
        pass


server = http.server.HTTPServer(("127.0.0.1", int(os.environ["IDENTITY_HTTP_PORT"])), Handler)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
print("fake identity up", os.environ.get("MAINSTAY_AUTH_JWKS_URL"), flush=True)
server.serve_forever()
"""

IDENTITY_BOOTSTRAP = """\
import os
import sys
from pathlib import Path

args = sys.argv[1:]
assert args[0] == "admin-token", args
out = Path(args[args.index("--out") + 1])
with (Path(os.environ["MAINSTAY_HOME"]) / "bootstrap-runs").open("a") as runs:
    runs.write(os.environ["IDENTITY_KEY_SECRET_FILE"] + "\\n")
if {fail!r}:
    print("error: no key secret: set IDENTITY_KEY_SECRETS", file=sys.stderr)
    sys.exit(1)
if out.exists():
    print(f"admin token kept: {{out}}")
else:
    out.write_text("fake-token\\n")
    print(f"admin token written: {{out}}")
"""

CONSUMER_MAIN = """\
import os
import signal
import sys
import time

print(
    "consumer up",
    os.environ.get("MAINSTAY_AUTH_JWKS_URL"),
    os.environ.get("MAINSTAY_AUTH_REVOCATIONS_URL"),
    os.path.exists(os.path.join(os.environ["MAINSTAY_HOME"], "admin.token")),
    flush=True,
)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
while True:
    time.sleep(1)
"""

MAILER_MAIN = """\
import os
import signal
import sys
import time

print(
    "mailer up",
    os.environ.get("EXECUTION_IDENTITY_URL"),
    os.environ.get("EXECUTION_MAIL_CREDENTIALS_FILE"),
    os.environ.get("EXECUTION_MEMORY_TARGET"),
    flush=True,
)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
while True:
    time.sleep(1)
"""


def _repo(
    root: Path, *, mode: str = "ok", bootstrap_fails: bool = False, mailer: bool = False
) -> Path:
    identity = root / "services" / "identity" / "src" / "mainstay_identity"
    identity.mkdir(parents=True)
    (identity / "__init__.py").write_text("")
    (identity / "__main__.py").write_text(IDENTITY_MAIN.format(mode=mode))
    (identity / "bootstrap.py").write_text(IDENTITY_BOOTSTRAP.format(fail=bootstrap_fails))
    consumer = root / "services" / "consumer" / "src" / "mainstay_consumer"
    consumer.mkdir(parents=True)
    (consumer / "__init__.py").write_text("")
    (consumer / "__main__.py").write_text(CONSUMER_MAIN)
    if mailer:
        execution = root / "services" / "execution" / "src" / "mainstay_execution"
        execution.mkdir(parents=True)
        (execution / "__init__.py").write_text("")
        (execution / "__main__.py").write_text(MAILER_MAIN)
    return root


def _stack(
    home: Path,
    repo: Path,
    kafka_bootstrap: str,
    postgres_dsn: str,
    port: int,
    events: list[str] | None = None,
    timeout_s: float = 30.0,
) -> EmbeddedStack:
    return EmbeddedStack(
        home,
        repo,
        external_kafka=kafka_bootstrap,
        external_postgres=postgres_dsn,
        create_topics=False,
        identity_port=port,
        startup_timeout_s=timeout_s,
        service_settle_s=0.5,
        stop_grace_s=5.0,
        report=(events if events is not None else []).append,
    )


def _lines(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


async def _wait_for_line(log: Path, start: str) -> str:
    for _ in range(200):
        for line in _lines(log):
            if line.startswith(start):
                return line
        await asyncio.sleep(0.05)
    raise AssertionError(f"no line starting with {start!r} in {log}")


async def test_identity_starts_first_signs_the_token_and_the_others_follow_it(
    tmp_path: Path,
    home_factory: Callable[[], Path],
    kafka_bootstrap: str,
    postgres_dsn: str,
) -> None:
    repo = _repo(tmp_path / "repo")
    home = home_factory()
    port = free_port()
    events: list[str] = []
    stack = _stack(home, repo, kafka_bootstrap, postgres_dsn, port, events)
    url = f"http://127.0.0.1:{port}"

    rows = {row.name: row for row in await stack.up()}

    assert rows["identity"].state == "up"
    assert rows["identity"].address == url
    assert rows["consumer"].state == "up"
    assert (home / "admin.token").read_text() == "fake-token\n"
    assert (home / "bootstrap-runs").read_text().splitlines() == [str(home / "identity.key")]
    assert not (home / "jwks.json").exists()
    identity_line = await _wait_for_line(stack.home.log_file("identity"), "fake identity up")
    assert identity_line == f"fake identity up {url}/.well-known/jwks.json"
    # The consumer started after the token existed, pointed at identity's JWKS and feed.
    consumer_line = await _wait_for_line(stack.home.log_file("consumer"), "consumer up")
    assert consumer_line == f"consumer up {url}/.well-known/jwks.json {url}/v1/revocations True"
    assert events.index(f"admin token written: {home / 'admin.token'}") < events.index(
        next(event for event in events if event.startswith("consumer: started"))
    )

    before = load_record(stack.home.pid_file("identity"))
    assert before is not None
    events.clear()
    await stack.up()

    assert load_record(stack.home.pid_file("identity")) == before
    assert len((home / "bootstrap-runs").read_text().splitlines()) == 2
    assert f"identity: already running at {url} (pid {before.pid})" in events
    assert f"admin token kept: {home / 'admin.token'}" in events

    assert sorted(await stack.down()) == ["consumer", "identity"]


async def test_a_service_that_mails_gets_a_principal_and_its_credentials_file(
    tmp_path: Path,
    home_factory: Callable[[], Path],
    kafka_bootstrap: str,
    postgres_dsn: str,
) -> None:
    repo = _repo(tmp_path / "repo", mailer=True)
    home = home_factory()
    port = free_port()
    events: list[str] = []
    stack = _stack(home, repo, kafka_bootstrap, postgres_dsn, port, events)
    url = f"http://127.0.0.1:{port}"
    credentials = home / "credentials" / "execution.txt"

    rows = {row.name: row for row in await stack.up()}

    assert rows["execution"].state == "up"
    client_id, secret = credentials.read_text().strip().split(":")
    assert client_id == "default/execution"
    assert credentials.stat().st_mode & 0o777 == 0o600
    assert not (home / "credentials" / "consumer.txt").exists()  # it mails nobody
    line = await _wait_for_line(stack.home.log_file("execution"), "mailer up")
    assert line == f"mailer up {url} {credentials} 127.0.0.1:50051"
    assert f"credentials: wrote {credentials} (execution mails as default/execution)" in events

    events.clear()
    await stack.up()  # the secret still gets a token: kept
    assert credentials.read_text().strip() == f"{client_id}:{secret}"
    assert f"credentials: kept {credentials} (execution mails as default/execution)" in events

    await stack.down()
    await stack.up()  # this identity forgot every secret (a new database): a new one
    assert credentials.read_text().strip().split(":")[1] != secret
    assert sorted(await stack.down()) == ["consumer", "execution", "identity"]


async def test_an_identity_that_exits_at_start_is_reported_with_its_log(
    tmp_path: Path,
    home_factory: Callable[[], Path],
    kafka_bootstrap: str,
    postgres_dsn: str,
) -> None:
    repo = _repo(tmp_path / "repo", mode="crash")
    home = home_factory()
    stack = _stack(home, repo, kafka_bootstrap, postgres_dsn, free_port())

    with pytest.raises(StackError) as failure:
        await stack.up()

    message = str(failure.value)
    assert f"identity exited before it was ready; last lines of {home / 'logs'}" in message
    assert "fake identity: no key secret, giving up" in message
    assert stack.home.recorded_names() == []  # neither identity nor the consumer
    assert not (home / "admin.token").exists()


async def test_an_identity_that_never_gets_ready_is_stopped_after_the_timeout(
    tmp_path: Path,
    home_factory: Callable[[], Path],
    kafka_bootstrap: str,
    postgres_dsn: str,
) -> None:
    repo = _repo(tmp_path / "repo", mode="never-ready")
    home = home_factory()
    port = free_port()
    stack = _stack(home, repo, kafka_bootstrap, postgres_dsn, port, timeout_s=2.0)

    with pytest.raises(StackError) as failure:
        await stack.up()

    message = str(failure.value)
    assert f"was not ready at http://127.0.0.1:{port}/readyz within 2s" in message
    assert "/readyz answered 503" in message
    assert str(stack.home.log_file("identity")) in message
    assert stack.home.recorded_names() == []


async def test_a_failing_bootstrap_stops_up_before_the_other_services(
    tmp_path: Path,
    home_factory: Callable[[], Path],
    kafka_bootstrap: str,
    postgres_dsn: str,
) -> None:
    repo = _repo(tmp_path / "repo", bootstrap_fails=True)
    home = home_factory()
    stack = _stack(home, repo, kafka_bootstrap, postgres_dsn, free_port())

    with pytest.raises(StackError, match=r"(?s)admin token: .* failed \(exit 1\):\nerror: no key"):
        await stack.up()

    assert stack.home.recorded_names() == ["identity"]  # `down` stops it
    record = load_record(stack.home.pid_file("identity"))
    assert record is not None
    assert live_process(record) is not None


async def test_a_taken_identity_port_is_reported(
    tmp_path: Path,
    home_factory: Callable[[], Path],
    kafka_bootstrap: str,
    postgres_dsn: str,
) -> None:
    repo = _repo(tmp_path / "repo")
    home = home_factory()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        stack = _stack(home, repo, kafka_bootstrap, postgres_dsn, port)

        with pytest.raises(StackError, match=f"127.0.0.1:{port} is taken by another program"):
            await stack.up()

    assert stack.home.recorded_names() == []
