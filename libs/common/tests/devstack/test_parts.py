"""The stack's building blocks that need no running server."""

from __future__ import annotations

import socket
import subprocess
import sys
from typing import TYPE_CHECKING

import psutil
import pytest

import mainstay_common.devstack as devstack
import mainstay_common.devstack._process as process_module
from mainstay_common.db import redact_dsn
from mainstay_common.devstack import (
    ProcessRecord,
    ServiceSpec,
    StackError,
    StackHome,
    discover_services,
    resolve_home,
)
from mainstay_common.devstack._broker import split_host_port
from mainstay_common.devstack._process import (
    live_process,
    load_record,
    restartable_port,
    save_record,
    tail,
)
from mainstay_common.devstack._services import identity_port, service_environment

if TYPE_CHECKING:
    from pathlib import Path


def test_public_names_are_stable() -> None:
    assert sorted(devstack.__all__) == sorted(
        [
            "BROKER",
            "DEFAULT_KAFKA_PORT",
            "DEFAULT_PG_PORT",
            "HOME_ENV",
            "POSTGRES",
            "ComponentKind",
            "ComponentState",
            "ComponentStatus",
            "EmbeddedStack",
            "ProcessRecord",
            "ServiceSpec",
            "StackError",
            "StackHome",
            "discover_services",
            "free_port",
            "resolve_home",
            "restartable_port",
        ]
    )


def test_a_restartable_port_is_free_and_outside_the_ephemeral_range(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No outgoing connection can take it while its server is down (it would then fail
    to listen again); without a known range it is whatever port the OS gives."""
    monkeypatch.setattr(process_module, "_EPHEMERAL_RANGE_FILE", str(tmp_path / "range"))
    (tmp_path / "range").write_text("32768\t60999\n")
    ports = {restartable_port() for _ in range(20)}
    assert all(10_000 <= port < 32_768 or port > 60_999 for port in ports), ports
    for port in ports:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))
    (tmp_path / "range").unlink()
    assert 0 < restartable_port() < 65_536


def test_home_is_mainstay_home_or_dot_mainstay(tmp_path: Path) -> None:
    assert resolve_home(tmp_path, {}) == tmp_path.resolve() / ".mainstay"
    assert resolve_home(tmp_path, {"MAINSTAY_HOME": str(tmp_path / "x")}) == tmp_path / "x"


def test_a_record_survives_the_round_trip(tmp_path: Path) -> None:
    record = ProcessRecord("broker", 42, 1700000000.25, "127.0.0.1:1", ("tansu", "broker"))
    save_record(tmp_path / "broker.pid", record)
    assert load_record(tmp_path / "broker.pid") == record
    (tmp_path / "junk.pid").write_text("not json")
    assert load_record(tmp_path / "junk.pid") is None
    assert not (tmp_path / "junk.pid").exists()


def test_a_reused_pid_is_not_our_process() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        start = psutil.Process(child.pid).create_time()
        ours = ProcessRecord("x", child.pid, start, "")
        reused = ProcessRecord("x", child.pid, start - 1.0, "")
        assert live_process(ours) is not None
        assert live_process(reused) is None
    finally:
        child.kill()
        child.wait(10)
    assert live_process(ours) is None


def test_services_are_folders_with_a_main_module(fake_repo: Path) -> None:
    [service] = discover_services(fake_repo)
    assert (service.name, service.module) == ("fake-svc", "mainstay_fake_svc")
    assert service.command()[1:] == ["-m", "mainstay_fake_svc"]
    assert discover_services(fake_repo / "nowhere") == []


def test_a_service_gets_the_stack_addresses(fake_repo: Path, tmp_path: Path) -> None:
    [service] = discover_services(fake_repo)
    env = service_environment(
        service,
        {"PYTHONPATH": "/elsewhere", "IDENTITY_HTTP_PORT": "1"},
        home=tmp_path,
        kafka_bootstrap="127.0.0.1:1",
        postgres_dsn="postgresql://x@127.0.0.1:2/x",
        topic_prefix="p.",
        identity_port=8203,
    )
    assert env["MAINSTAY_KAFKA_BOOTSTRAP"] == "127.0.0.1:1"
    assert env["MAINSTAY_POSTGRES_DSN"] == "postgresql://x@127.0.0.1:2/x"
    assert env["MAINSTAY_KAFKA_TOPIC_PREFIX"] == "p."
    assert env["MAINSTAY_AUTH_JWKS_URL"] == "http://127.0.0.1:8203/.well-known/jwks.json"
    assert env["MAINSTAY_AUTH_REVOCATIONS_URL"] == "http://127.0.0.1:8203/v1/revocations"
    assert env["IDENTITY_HTTP_PORT"] == "8203"  # where the stack waits for it
    assert "MAINSTAY_AUTH_JWKS_FILE" not in env
    assert env["IDENTITY_KEY_SECRET_FILE"] == str(tmp_path / "identity.key")
    assert env["TOOLS_GATEWAY_VAULT_KEY_FILE"] == str(tmp_path / "vault.key")
    assert env["PYTHONPATH"].split(":") == [str(service.src), "/elsewhere"]
    # Consumer timing is the broker's business unless the stack runs the embedded one.
    assert "MAINSTAY_KAFKA_SESSION_TIMEOUT_MS" not in env


def test_on_the_embedded_broker_consumers_join_faster(fake_repo: Path, tmp_path: Path) -> None:
    [service] = discover_services(fake_repo)
    stack = {
        "home": tmp_path,
        "kafka_bootstrap": "127.0.0.1:1",
        "postgres_dsn": "postgresql://x@127.0.0.1:2/x",
        "topic_prefix": "",
        "embedded_broker": True,
    }
    env = service_environment(service, {}, **stack)
    # It holds a join for half the session timeout: 2 s per consumer group, not 5.
    assert env["MAINSTAY_KAFKA_SESSION_TIMEOUT_MS"] == "4000"
    assert env["MAINSTAY_KAFKA_HEARTBEAT_INTERVAL_MS"] == "1000"
    own = service_environment(service, {"MAINSTAY_KAFKA_SESSION_TIMEOUT_MS": "30000"}, **stack)
    assert own["MAINSTAY_KAFKA_SESSION_TIMEOUT_MS"] == "30000"


def test_the_developers_own_auth_settings_win(fake_repo: Path, tmp_path: Path) -> None:
    [service] = discover_services(fake_repo)

    def env_of(base: dict[str, str]) -> dict[str, str]:
        return service_environment(
            service,
            base,
            home=tmp_path,
            kafka_bootstrap="127.0.0.1:1",
            postgres_dsn="postgresql://x@127.0.0.1:2/x",
            topic_prefix="",
            identity_port=8103,
        )

    own = env_of(
        {
            "MAINSTAY_AUTH_JWKS_URL": "https://id.example/jwks",
            "MAINSTAY_AUTH_REVOCATIONS_URL": "https://id.example/revocations",
        }
    )
    assert own["MAINSTAY_AUTH_JWKS_URL"] == "https://id.example/jwks"
    assert own["MAINSTAY_AUTH_REVOCATIONS_URL"] == "https://id.example/revocations"
    # A file named by the developer is not overridden by a URL (which would take precedence).
    with_file = env_of({"MAINSTAY_AUTH_JWKS_FILE": "/keys.json"})
    assert with_file["MAINSTAY_AUTH_JWKS_FILE"] == "/keys.json"
    assert "MAINSTAY_AUTH_JWKS_URL" not in with_file
    # Without an identity service in the workspace nothing auth-related is set.
    none = service_environment(
        service,
        {},
        home=tmp_path,
        kafka_bootstrap="127.0.0.1:1",
        postgres_dsn="postgresql://x@127.0.0.1:2/x",
        topic_prefix="",
    )
    assert not {k for k in none if k.startswith("MAINSTAY_AUTH_")}


def test_each_service_gets_what_it_needs_from_the_mesh(tmp_path: Path) -> None:
    def env_of(name: str, base: dict[str, str] | None = None) -> dict[str, str]:
        spec = ServiceSpec(name, "mainstay_" + name.replace("-", "_"), tmp_path / name / "src")
        return service_environment(
            spec,
            base or {},
            home=tmp_path,
            kafka_bootstrap="127.0.0.1:1",
            postgres_dsn="postgresql://x@127.0.0.1:2/x",
            topic_prefix="",
            identity_port=8203,
        )

    identity = "http://127.0.0.1:8203"
    execution = env_of("execution")
    assert execution["EXECUTION_MEMORY_TARGET"] == "127.0.0.1:50051"
    assert execution["EXECUTION_IDENTITY_URL"] == identity
    assert "EXECUTION_MAIL_CREDENTIALS_FILE" not in execution  # none provisioned yet
    moved = env_of("execution", {"MEMORY_GRPC_PORT": "50999"})
    assert moved["EXECUTION_MEMORY_TARGET"] == "127.0.0.1:50999"
    ledger = env_of("ledger")
    assert (ledger["LEDGER_USAGE_EVENTS"], ledger["LEDGER_IDENTITY_URL"]) == ("true", identity)
    assert env_of("supervisor")["SUPERVISOR_IDENTITY_URL"] == identity
    # Once `up` wrote a service's credentials, its environment names the file.
    (tmp_path / "credentials").mkdir()
    for service in ("execution", "ledger", "supervisor"):
        (tmp_path / "credentials" / f"{service}.txt").write_text(f"default/{service}:s\n")
    assert env_of("execution")["EXECUTION_MAIL_CREDENTIALS_FILE"] == str(
        tmp_path / "credentials" / "execution.txt"
    )
    assert env_of("ledger")["LEDGER_APPROVAL_CREDENTIALS_FILE"] == str(
        tmp_path / "credentials" / "ledger.txt"
    )
    assert env_of("supervisor")["SUPERVISOR_MAIL_CREDENTIALS_FILE"] == str(
        tmp_path / "credentials" / "supervisor.txt"
    )
    # What the developer set wins; no service gets another's settings.
    own = env_of("ledger", {"LEDGER_USAGE_EVENTS": "false", "LEDGER_IDENTITY_URL": "http://id"})
    assert (own["LEDGER_USAGE_EVENTS"], own["LEDGER_IDENTITY_URL"]) == ("false", "http://id")
    tools = env_of("tools-gateway")
    assert not {k for k in tools if k.startswith(("EXECUTION_", "LEDGER_", "SUPERVISOR_"))}
    assert not {k for k in execution if k.startswith(("LEDGER_", "SUPERVISOR_"))}


def test_the_identity_port_comes_from_the_environment() -> None:
    assert identity_port({}) == 8103
    assert identity_port({"IDENTITY_HTTP_PORT": "9103"}) == 9103
    for bad in ("http", "0", "70000"):
        with pytest.raises(StackError, match="IDENTITY_HTTP_PORT"):
            identity_port({"IDENTITY_HTTP_PORT": bad})


def test_addresses_are_parsed_and_passwords_hidden() -> None:
    assert split_host_port("h1:9092,h2:9092") == ("h1", 9092)
    with pytest.raises(StackError):
        split_host_port("no-port")
    assert redact_dsn("postgresql://u:secret@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert redact_dsn("postgresql://u@h:5432/db") == "postgresql://u@h:5432/db"


def test_tail_returns_the_last_lines(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text("".join(f"line {i}\n" for i in range(10_000)))
    assert tail(log, 3) == ["line 9997", "line 9998", "line 9999"]
    assert tail(tmp_path / "missing.log") == []


def test_home_layout(tmp_path: Path) -> None:
    home = StackHome(tmp_path / "h")
    home.prepare()
    assert home.log_file("postgres") == home.pgdata / "server.log"
    assert home.log_file("memory") == home.logs / "memory.log"
    assert (home.root / ".gitignore").read_text() == "*\n"
    save_record(home.pid_file("b"), ProcessRecord("b", 1, 0.0, ""))
    save_record(home.pid_file("a"), ProcessRecord("a", 1, 0.0, ""))
    assert home.recorded_names() == ["a", "b"]
