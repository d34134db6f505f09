"""Secrets read from settings: inline values first, else one per line of a file."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from pydantic import SecretStr

from mainstay_common.settings import secret_values

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
