"""A real Mosquitto broker on loopback, started with a generated config (demo, tests, benchmarks)."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

log = logging.getLogger(__name__)


class BrokerError(RuntimeError):
    pass


def die_with_parent() -> None:
    """Run in a child before exec (Linux): the kernel sends it SIGTERM when its parent dies,
    however the parent dies (even SIGKILL), so a broker or server never outlives its starter."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def mosquitto_binary() -> str:
    for candidate in ("mosquitto", "/usr/sbin/mosquitto"):
        found = shutil.which(candidate)
        if found:
            return found
    raise BrokerError("mosquitto is not installed (apt-get install -y mosquitto)")


class MosquittoBroker:
    """Mosquitto on 127.0.0.1:<port>, with persistence in `workdir` so restarts keep sessions."""

    def __init__(self, workdir: Path, port: int | None = None, extra_config: str = "") -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.extra_config = extra_config
        self._process: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = workdir / "mosquitto.conf"
        self.log_path = workdir / "mosquitto.log"

    def _write_config(self) -> None:
        lines = [
            f"listener {self.port} 127.0.0.1",
            "persistence true",
            f"persistence_location {self.workdir}/",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "max_queued_messages 0",
            "max_inflight_messages 0",
        ]
        if os.geteuid() == 0:
            # started as root, mosquitto drops to user "mosquitto", which cannot read or write
            # our private working folder (password file, persistence)
            lines.append("user root")
        if "allow_anonymous" not in self.extra_config:
            lines.append("allow_anonymous true")
        self.config_path.write_text("\n".join(lines) + "\n" + self.extra_config)

    def start(self, timeout_s: float = 10.0) -> MosquittoBroker:
        self._write_config()
        with self.log_path.open("ab") as log_file:
            self._process = subprocess.Popen(
                [mosquitto_binary(), "-c", str(self.config_path)],
                stdout=log_file,
                stderr=log_file,
                preexec_fn=die_with_parent,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise BrokerError(f"mosquitto exited at start: {self.log_path.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    log.info("mosquitto listening on 127.0.0.1:%d", self.port)
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise BrokerError(f"mosquitto did not listen on port {self.port} within {timeout_s} s")

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def kill(self) -> None:
        """kill -9: a broker that crashes or loses power (tests of what survives that)."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        self._process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def __enter__(self) -> MosquittoBroker:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
