"""Fixtures the edge tests share."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.disk import small_tmpfs
from tests.support.fleet import reap


@pytest.fixture(autouse=True)
def _no_agent_outlives_its_test() -> Iterator[None]:
    yield
    reap()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 2 MB file system."""
    with small_tmpfs(tmp_path, "2m") as mount_point:
        yield mount_point
