"""A real small file system for disk-full tests: a tmpfs of a given size (needs root, as CI has)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def small_tmpfs(tmp_path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` (as mount's `size=`, e.g. "2m") mounted under `tmp_path`; skips the test
    where it cannot be mounted."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)],
                             capture_output=True, check=False)  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        # lazy: detaches even if a failed test left a file open on it
        subprocess.run(["umount", "--lazy", str(mount_point)], check=True)
