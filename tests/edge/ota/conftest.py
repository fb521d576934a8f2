"""Releases built once per test session (each build runs the detector on its reference frame)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.ota import Release, ReleaseKit


@pytest.fixture(scope="session")
def kit(tmp_path_factory: pytest.TempPathFactory) -> ReleaseKit:
    return ReleaseKit(tmp_path_factory.mktemp("releases"))


@pytest.fixture(scope="session")
def release_v2(kit: ReleaseKit) -> Release:
    return kit.build("2")


@pytest.fixture
def served(tmp_path: Path) -> Path:
    folder = tmp_path / "served"
    folder.mkdir()
    return folder
