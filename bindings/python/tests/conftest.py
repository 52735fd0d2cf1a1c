"""pytest fixtures; the environment and helpers are in support.py (imported first)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

import support
import tessera


def pytest_unconfigure(config: pytest.Config) -> None:
    if support.own_home is not None:
        shutil.rmtree(support.own_home, ignore_errors=True)


@pytest.fixture
def session() -> Iterator[tessera.Session]:
    """A session of the demo publisher on the licensed home; closed after the test."""
    with tessera.Session(tessera.DEMO_VENDOR_ID, tessera.DEMO_PUBLISHER_KEY) as s:
        yield s
