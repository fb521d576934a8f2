"""Releases for the model-update tests: signed bundles of the packaged model (each release its own
bytes), a throw-away release key, archives, commands, and a file server that can cut a download."""

from __future__ import annotations

import hashlib
import http.server
import json
import shutil
import socket
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import onnx

from trapline.bundle import pack_bundle, sign_bundle
from trapline.contracts import ModelCommand, RollbackGrant
from trapline.edge.config import PACKAGED_KEYRING, PACKAGED_MODEL, PACKAGED_SAMPLES
from trapline.export.bundle import build_bundle
from trapline.files import file_sha256
from trapline.keyring import generate_keys
from trapline.manifest import ModelManifest, ReferenceDetection
from trapline.rollback import sign_rollback

# one reference frame keeps each build short (the detector loads once and runs once)
REFERENCE = [PACKAGED_SAMPLES / "cougar-39858-0.jpg"]


@dataclass(frozen=True)
class Release:
    name: str
    version: str
    folder: Path  # the signed bundle directory
    archive: Path  # its .tar.gz, what a trap downloads
    sha256: str  # of the archive
    size: int
    model_sha256: str
    key_id: str

    def command(self, url: str, release_id: int = 1, **changes: Any) -> ModelCommand:
        fields: dict[str, Any] = {
            "release_id": release_id,
            "name": self.name,
            "version": self.version,
            "url": url,
            "sha256": self.sha256,
            "size": self.size,
            "model_sha256": self.model_sha256,
            "key_id": self.key_id,
            "runtime": "onnx",
            "issued_at": datetime.now(UTC),
        }
        fields.update(changes)
        return ModelCommand.model_validate(fields)


class ReleaseKit:
    """A release key (trusted beside the packaged one) and the bundles it signs."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.keyring = folder / "keyring"
        self.keyring.mkdir(parents=True, exist_ok=True)
        for key in PACKAGED_KEYRING.glob("*.pub"):
            shutil.copyfile(key, self.keyring / key.name)
        self.private_key = folder / "release.key"
        public = folder / "release.pub"
        self.key_id = generate_keys(self.private_key, public)
        shutil.copyfile(public, self.keyring / f"{self.key_id}.pub")

    def model_variant(self, tag: str) -> Path:
        """The packaged model, same weights, own bytes: every release has its own model hash."""
        model = onnx.load(str(PACKAGED_MODEL / "model.onnx"))
        entry = model.metadata_props.add()
        entry.key, entry.value = "trapline_test_release", tag
        path = self.folder / "variants" / f"model-{tag}.onnx"
        path.parent.mkdir(parents=True, exist_ok=True)
        onnx.save(model, str(path))
        return path

    def build(
        self, version: str, name: str = "trapline-nano", references: list[Path] | None = None
    ) -> Release:
        folder = self.folder / f"{name}-{version}"
        shutil.rmtree(folder, ignore_errors=True)
        build_bundle(
            self.model_variant(version),
            folder,
            name,
            version,
            self.private_key,
            reference_frames=REFERENCE if references is None else references,
        )
        return self.pack(folder)

    def pack(self, folder: Path) -> Release:
        archive = pack_bundle(folder, folder.parent / f"{folder.name}.tar.gz")
        manifest = ModelManifest.read(folder / "manifest.json")
        return Release(
            manifest.name,
            manifest.version,
            folder,
            archive,
            file_sha256(archive),
            archive.stat().st_size,
            manifest.files[manifest.model_file],
            manifest.key_id or "",
        )

    def failing_self_test(self, version: str) -> Release:
        """A correctly signed bundle whose model does not find what its reference frame says: a
        confident animal where there is none (as a broken export or a wrong model file would)."""
        release = self.build(version)
        manifest = ModelManifest.read(release.folder / "manifest.json")
        assert manifest.self_test is not None
        frame = manifest.self_test.frames[0]
        ghost = ReferenceDetection(category="animal", conf=0.9, bbox=(0.6, 0.6, 0.2, 0.2))
        frames = [frame.model_copy(update={"detections": [*frame.detections, ghost]})]
        self_test = manifest.self_test.model_copy(update={"frames": frames})
        sign_bundle(release.folder, manifest.model_copy(update={"self_test": self_test}), self.private_key)
        return self.pack(release.folder)

    def tampered(self, release: Release) -> Release:
        """`release` with its model bytes changed after signing (the manifest still says otherwise);
        the archive hash is the tampered archive's own, as an attacker with the server would set it."""
        folder = release.folder.parent / f"{release.folder.name}-tampered"
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(release.folder, folder)
        model = folder / "model.onnx"
        data = bytearray(model.read_bytes())
        data[-100] ^= 0xFF
        model.write_bytes(bytes(data))
        return self.pack(folder)

    def grant(self, release: Release) -> RollbackGrant:
        return sign_rollback(self.private_key, release.name, release.version, release.model_sha256)


class BundleFileServer:
    """Serves a folder over HTTP on loopback, with Range requests; counts the body bytes it sends;
    can cut the next response after N body bytes (a dropped link), or ignore Range."""

    def __init__(self, folder: Path, token: str | None = None) -> None:
        self.folder = folder
        self.token = token
        self.body_bytes = 0
        self.requests: list[tuple[str, str | None, int]] = []
        self.cut_next_after: int | None = None
        self.ignore_range = False
        self.bytes_per_s: float | None = None
        self._lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
                pass

            def do_GET(self) -> None:
                path = server.folder / self.path.lstrip("/")
                wanted = self.headers.get("Range")
                if server.token and self.headers.get("Authorization") != f"Bearer {server.token}":
                    server.requests.append((self.path, wanted, 401))
                    self.send_error(401)
                    return
                if not path.is_file():
                    server.requests.append((self.path, wanted, 404))
                    self.send_error(404)
                    return
                data = path.read_bytes()
                start = 0
                if wanted and not server.ignore_range:
                    start = int(wanted.removeprefix("bytes=").split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                with server._lock:
                    cut, server.cut_next_after = server.cut_next_after, None
                server.requests.append((self.path, wanted, 206 if start else 200))
                if cut is not None:
                    body = body[:cut]
                for offset in range(0, len(body), 16384):
                    block = body[offset : offset + 16384]
                    try:
                        self.wfile.write(block)
                    except (BrokenPipeError, ConnectionResetError):
                        return  # the client went away (a killed trap)
                    with server._lock:
                        server.body_bytes += len(block)
                    if server.bytes_per_s:
                        time.sleep(len(block) / server.bytes_per_s)
                if cut is not None:
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def __enter__(self) -> BundleFileServer:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def ota_reports(payloads: list[dict[str, Any]], release_id: int | None = None) -> list[str]:
    """The stages reported, in order (optionally for one release)."""
    return [p["stage"] for p in payloads if release_id is None or p.get("release_id") == release_id]


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def dump(path: Path, payload: Any) -> Path:
    path.write_text(json.dumps(payload))
    return path
