"""What ``mainstay_client`` offers: every public name is there and says what it is."""

from __future__ import annotations

from typing import get_args

import mainstay_client
from mainstay_client._memory import Kind
from mainstay_client.cli._memory import KINDS


def test_every_public_name_exists_and_is_documented() -> None:
    for name in mainstay_client.__all__:
        value = getattr(mainstay_client, name)
        if isinstance(value, type):
            assert value.__doc__, f"mainstay_client.{name} has no docstring"
    assert {"Mainstay", "MainstaySync", "MemoryClient", "MemoryClientSync", "ClientError"} <= set(
        mainstay_client.__all__
    )


def test_the_cli_offers_every_memory_kind() -> None:
    assert set(KINDS) == set(get_args(Kind))
