"""Bundle downloads over a link that drops: resume with Range, start over when the server will not,
and never leave a partial file on a full disk."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

import pytest

from tests.support.ota import BundleFileServer, Release
from trapline.edge.ota.download import DiskFullError, DownloadError, download


def _serve(release: Release, served: Path) -> str:
    shutil.copyfile(release.archive, served / "bundle.tar.gz")
    return "bundle.tar.gz"


def test_a_download_cut_half_way_resumes_and_transfers_each_byte_once(
    release_v2: Release, served: Path, tmp_path: Path
) -> None:
    name = _serve(release_v2, served)
    with BundleFileServer(served) as server:
        clean = download(server.url(name), tmp_path / "clean.part", release_v2.size, release_v2.sha256)
        clean_bytes = server.body_bytes
        server.body_bytes = 0
        part = tmp_path / "cut.part"
        server.cut_next_after = release_v2.size // 2
        with pytest.raises(DownloadError, match="will resume"):
            download(server.url(name), part, release_v2.size, release_v2.sha256)
        assert part.stat().st_size == release_v2.size // 2  # what arrived is kept
        resumed = download(server.url(name), part, release_v2.size, release_v2.sha256)
    assert clean.received_bytes == clean_bytes == release_v2.size
    assert resumed.resumed_from == release_v2.size // 2
    assert resumed.received_bytes == release_v2.size - release_v2.size // 2
    assert server.body_bytes == release_v2.size  # interrupted + resumed: not one byte twice
    assert server.requests[-1][1] == f"bytes={release_v2.size // 2}-"  # a Range request
    assert part.read_bytes() == release_v2.archive.read_bytes()


def test_a_server_that_ignores_range_gets_a_fresh_download(
    release_v2: Release, served: Path, tmp_path: Path
) -> None:
    name = _serve(release_v2, served)
    part = tmp_path / "b.part"
    part.write_bytes(release_v2.archive.read_bytes()[:1000])
    with BundleFileServer(served) as server:
        server.ignore_range = True
        result = download(server.url(name), part, release_v2.size, release_v2.sha256)
    assert result.received_bytes == release_v2.size
    assert part.read_bytes() == release_v2.archive.read_bytes()


def test_a_spoilt_partial_file_is_dropped_and_the_next_attempt_starts_clean(
    release_v2: Release, served: Path, tmp_path: Path
) -> None:
    name = _serve(release_v2, served)
    part = tmp_path / "c.part"
    part.write_bytes(b"\0" * 5000)  # e.g. blocks a power cut never wrote
    with BundleFileServer(served) as server:
        with pytest.raises(DownloadError, match="does not match"):
            download(server.url(name), part, release_v2.size, release_v2.sha256)
        assert not part.exists()
        download(server.url(name), part, release_v2.size, release_v2.sha256)
    assert part.read_bytes() == release_v2.archive.read_bytes()


def test_missing_bundle_and_wrong_size_are_errors(release_v2: Release, served: Path, tmp_path: Path) -> None:
    name = _serve(release_v2, served)
    with BundleFileServer(served) as server:
        with pytest.raises(DownloadError, match="HTTP 404"):
            download(server.url("nope.tar.gz"), tmp_path / "d.part", release_v2.size, release_v2.sha256)
        with pytest.raises(DownloadError, match="more than"):
            download(server.url(name), tmp_path / "e.part", release_v2.size - 10, release_v2.sha256)


def test_disk_full_during_a_download_removes_the_partial_file(
    release_v2: Release, served: Path, small_disk: Path
) -> None:
    name = _serve(release_v2, served)
    assert release_v2.size > 2 * 1024 * 1024  # bigger than the disk
    part = small_disk / "f.part"
    with BundleFileServer(served) as server, pytest.raises(DiskFullError) as caught:
        download(server.url(name), part, release_v2.size, release_v2.sha256)
    assert isinstance(caught.value.__cause__, OSError)
    assert caught.value.__cause__.errno == errno.ENOSPC
    assert not part.exists()
    assert list(small_disk.iterdir()) == []
