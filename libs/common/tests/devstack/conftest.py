"""Homes, fake workspaces and ports for the devstack tests.

Every stack these tests start lives in its own temporary home on free ports
(never the default 19092/15432 nor the shared 29092/25432), and whatever a
test leaves running is stopped through its pid records when the test ends.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import pytest_asyncio

from mainstay_common.devstack import EmbeddedStack, free_port

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

FAKE_SERVICE_MAIN = """\
import os
import signal
import sys
import time

print(
    "fake service up",
    os.environ["MAINSTAY_KAFKA_BOOTSTRAP"],
    os.environ["MAINSTAY_POSTGRES_DSN"],
    os.environ.get("MAINSTAY_KAFKA_TOPIC_PREFIX", ""),
    flush=True,
)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
while True:
    time.sleep(1)
"""


def _make_fake_repo(root: Path) -> Path:
    package = root / "services" / "fake-svc" / "src" / "mainstay_fake_svc"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "__main__.py").write_text(FAKE_SERVICE_MAIN)
    library = root / "services" / "lib-only" / "src" / "mainstay_lib_only"
    library.mkdir(parents=True)
    (library / "__init__.py").write_text("")
    return root


async def _cleanup(home: Path) -> None:
    try:
        await EmbeddedStack(home, home, stop_grace_s=3.0).down()
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _new_home() -> Path:
    # Not under pytest's basetemp: as root, postgres runs as another user that
    # must traverse the parents, and pytest resets its basetemp root to 0700.
    return Path(tempfile.mkdtemp(prefix="mainstay-devstack-test-"))


@pytest_asyncio.fixture
async def home_factory() -> AsyncIterator[Callable[[], Path]]:
    """Fresh homes; each is brought down and deleted after the test."""
    homes: list[Path] = []

    def make() -> Path:
        homes.append(_new_home())
        return homes[-1]

    yield make
    for home in homes:
        await _cleanup(home)


@pytest.fixture(scope="session")
def make_fake_repo() -> Callable[[Path], Path]:
    """Build, under a folder, a workspace with one runnable service (``fake-svc``)
    and one folder without ``__main__`` (``lib-only``) that must not be started."""
    return _make_fake_repo


@pytest.fixture
def fake_repo(tmp_path: Path) -> Path:
    return _make_fake_repo(tmp_path / "repo")


@pytest.fixture(scope="session")
def new_home() -> Callable[[], Path]:
    """A fresh home folder; the caller brings it down and deletes it (see ``cleanup_home``)."""
    return _new_home


@pytest.fixture(scope="session")
def cleanup_home() -> Callable[[Path], Awaitable[None]]:
    return _cleanup


def _two_free_ports() -> tuple[int, int]:
    first = free_port()
    second = free_port()
    while second == first:
        second = free_port()
    return first, second


@pytest.fixture(scope="session")
def free_ports() -> Callable[[], tuple[int, int]]:
    """Two distinct free loopback ports (broker, PostgreSQL)."""
    return _two_free_ports
