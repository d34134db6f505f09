"""Shared settings: secrets (inline values first, else one per line of a file), heartbeats."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from pydantic import SecretStr, ValidationError
from pydantic_settings import SettingsConfigDict

from mainstay_common.settings import HeartbeatSettings, ServiceSettings, secret_values

if TYPE_CHECKING:
    from pathlib import Path


def test_inline_values_win_over_the_file(tmp_path: Path) -> None:
    file = tmp_path / "keys"
    file.write_text("from-file\n")
    assert secret_values([SecretStr("a"), SecretStr("b")], str(file), what="k") == ["a", "b"]


def test_the_file_gives_one_secret_per_non_blank_line(tmp_path: Path) -> None:
    file = tmp_path / "keys"
    file.write_text("  first \n\nsecond\n")
    assert secret_values([], str(file), what="k") == ["first", "second"]
    assert secret_values([], None, what="k") == []


def test_an_unreadable_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"cannot read the vault key file .*missing"):
        secret_values([], str(tmp_path / "missing"), what="vault key")


def test_the_heartbeat_interval_is_one_name_for_every_service(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class OneService(ServiceSettings):
        model_config = SettingsConfigDict(env_prefix="ONE_", extra="ignore")

    assert OneService().heartbeat.interval_s == 5.0
    monkeypatch.setenv("MAINSTAY_HEARTBEAT_INTERVAL_S", "0.5")
    monkeypatch.setenv("ONE_HEARTBEAT_INTERVAL_S", "9")  # not the service's own prefix
    assert OneService().heartbeat.interval_s == 0.5
    monkeypatch.setenv("MAINSTAY_HEARTBEAT_INTERVAL_S", "0")  # heartbeats off
    assert OneService().heartbeat.interval_s == 0
    monkeypatch.setenv("MAINSTAY_HEARTBEAT_INTERVAL_S", "-1")
    with pytest.raises(ValidationError, match="interval_s"):
        HeartbeatSettings()
