"""A throwaway PostgreSQL server on loopback (tests and benchmarks): initdb, start, drop.

Debian's `postgresql` package provides the binaries; as root the server runs as user postgres.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from trapline.cli.broker import free_port


def _bin_dir() -> Path | None:
    base = Path("/usr/lib/postgresql")
    versions = sorted(base.iterdir(), key=lambda p: int(p.name)) if base.exists() else []
    return versions[-1] / "bin" if versions else None


def available() -> bool:
    return _bin_dir() is not None


class TemporaryPostgres:
    def __init__(self, settings: dict[str, str] | None = None) -> None:
        """`settings`: extra server settings (`-c name=value`), e.g. for benchmarks."""
        self.settings = settings or {}
        bindir = _bin_dir()
        if bindir is None:
            raise RuntimeError("PostgreSQL is not installed (apt-get install -y postgresql)")
        self.bindir = bindir
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="trapline-pg-"))
        self.data = self.root / "data"
        self._as_postgres = os.geteuid() == 0

    def _run(self, *args: str) -> None:
        command = list(args)
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://trapline@127.0.0.1:{self.port}/trapline"

    def start(self) -> TemporaryPostgres:
        if self._as_postgres:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
        self._run(
            str(self.bindir / "initdb"), "-D", str(self.data), "-U", "trapline", "-A", "trust", "--no-sync"
        )
        self._pg_ctl_start()
        deadline = time.monotonic() + 30
        while True:
            try:
                self._run(
                    str(self.bindir / "createdb"),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "-U",
                    "trapline",
                    "trapline",
                )
                return self
            except subprocess.CalledProcessError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def _pg_ctl_start(self) -> None:
        # not UTC on purpose: anything that depends on the session time zone shows up in tests
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=off"
            " -c timezone=Pacific/Auckland"
        )
        options += "".join(f" -c {name}={value}" for name, value in self.settings.items())
        self._run(
            str(self.bindir / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.root / "log"),
            "-w", "start",
        )  # fmt: skip

    def pause(self) -> None:
        """Stop the server, keeping its data (an outage); `resume()` brings it back."""
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def resume(self) -> None:
        self._pg_ctl_start()

    def create_database(self, name: str) -> str:
        """A fresh, empty database on this server; returns its URL."""
        self._run(
            str(self.bindir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "trapline", name
        )
        return f"postgresql+psycopg://trapline@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):  # already stopped
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> TemporaryPostgres:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
