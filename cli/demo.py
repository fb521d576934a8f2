"""`make demo`: Mosquitto with per-trap credentials, the server (API + dashboard + ingest + job
worker), and two traps replaying the sample photos through the real agent. Prints the dashboard
URL and a login token, then runs until Ctrl-C, SIGTERM (or `--seconds`).

Every run starts fresh: the demo folder (database, pictures, broker state, the traps' spools) is
emptied first. Stopping stops the traps first and keeps the broker and ingest up until their
"stopped" status is stored; then the server, then the broker. No process outlives the demo (each
child is also told by the kernel when the demo dies, even by SIGKILL), and a child that dies
early is reported and ends the demo.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from trapline.cli.broker import MosquittoBroker, die_with_parent, free_port
from trapline.edge.config import PACKAGED_MODEL, PACKAGED_SAMPLES

if TYPE_CHECKING:
    from trapline.server.admin import DeviceCredentials

log = logging.getLogger(__name__)

TRAPS = ("trap-01", "trap-02")
INGEST_USER = "trapline-ingest"
MARKER = ".trapline-demo"  # a folder the demo may empty
# Each trap replays its own photos (edge/samples, credited in NOTICE.md): a burrowing-owl colony
# and a trail in the southwest, day (colour) and night (infrared) pictures in both.
DEMO_PHOTOS: dict[str, tuple[str, ...]] = {
    "trap-01": ("buow-IMG_8968.jpg", "buow-RCNX0242.jpg", "sw-fox-RCNX0063.jpg", "buow-RCNX1419.jpg",
                "squirrel-frame105534.jpg", "sw-deer-SYFR0041.jpg", "coyote-51472-810-empty.jpg"),
    "trap-02": ("cougar-39858-0.jpg", "sw-bobcat-IMAG0046.jpg", "coyote-51472-0.jpg", "sw-deer-IMAG0107.jpg",
                "jaguar-RL1-20051028-2159.jpg", "peru-EK000067-39523-0.jpg"),
}  # fmt: skip
# where the demo traps stand (the map), from DEMO_DAYS before today
DEMO_SITES = {
    "trap-01": ("Burrowing-owl colony", 32.7157, -115.5623),
    "trap-02": ("Canyon trail", 32.8421, -115.4870),
}
# capture times are made up (deterministic per trap): bursts hours apart over the last days, at
# night for infrared pictures, so the dashboard's charts show a true day/night rhythm
DEMO_DAYS = 10
STOPPED_WAIT_S = 20.0


class DemoStopped(Exception):
    """SIGTERM (or Ctrl-C) asked the demo to stop."""


class ChildDied(Exception):
    pass


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    done_ok: bool = False  # a trap that finished its replay exits 0: that is not a failure

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _spawn(name: str, args: list[str], env: dict[str, str], log_path: Path) -> Child:
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "trapline.cli", "--log-level", "info", *args],
            env=env,
            stdout=log_file,
            stderr=log_file,
            preexec_fn=die_with_parent,
        )
    return Child(name, process, log_path)


def _trap_config(workdir: Path, device: str, port: int, api_url: str, frames: int) -> Path:
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    synthetic_start = today - timedelta(days=DEMO_DAYS)
    config = {
        "device_id": device,
        "source": {
            "type": "replay", "files": [str(PACKAGED_SAMPLES / name) for name in DEMO_PHOTOS[device]],
            "count": frames, "interval_s": 1.0, "burst_size": 3, "burst_pause_s": 8.0, "run_name": "demo",
            "synthetic_start": synthetic_start.isoformat(), "synthetic_seed": TRAPS.index(device),
            # spread the bursts over DEMO_DAYS whatever the number of frames
            "synthetic_mean_gap_h": max(0.5, DEMO_DAYS * 24 / max(1, frames // 3)),
        },
        "mqtt": {"host": "127.0.0.1", "port": port, "username": device},
        "upload": {"url": api_url, "mode": "thumbnails"},
        "spool": {"path": str(workdir / device / "spool.sqlite")},
        "quarantine_dir": str(workdir / device / "quarantine"),
        "heartbeat_interval_s": 10,
    }  # fmt: skip
    path = workdir / f"{device}.json"
    path.write_text(json.dumps(config, indent=1))
    return path


def _wait_http(url: str, timeout_s: float, children: list[Child]) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        _check(children)
        try:
            with urllib.request.urlopen(url, timeout=1):  # noqa: S310 - our own loopback server
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout_s} s")


def _deploy(api_url: str, token: str) -> None:
    """Record where each demo trap stands, so the map and the Camtrap DP export have coordinates."""
    start = (datetime.now(UTC) - timedelta(days=DEMO_DAYS + 1)).isoformat()
    for device, (name, latitude, longitude) in DEMO_SITES.items():
        body = {"device_id": device, "location_name": name, "latitude": latitude, "longitude": longitude,
                "start": start}  # fmt: skip
        request = urllib.request.Request(  # noqa: S310 - our own loopback server
            f"{api_url}/api/v1/deployments",
            json.dumps(body).encode(),
            method="POST",
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10):  # noqa: S310
            pass


def fresh_workdir(workdir: Path) -> None:
    """Empty the demo folder (database, pictures, broker persistence, the traps' spools), so the
    traps replay their photos again; refuses a non-empty folder that is not a demo's."""
    workdir.mkdir(parents=True, exist_ok=True)
    entries = list(workdir.iterdir())
    if entries and not (workdir / MARKER).exists():
        raise RuntimeError(f"{workdir} is not empty and not a demo folder; choose another --workdir")
    for entry in entries:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    (workdir / MARKER).write_text("made by `trapline demo`; emptied at every start\n")


def _check(children: list[Child], broker: MosquittoBroker | None = None) -> None:
    """Raise ChildDied when a process of the demo is gone that should still run."""
    if broker is not None and not broker.running:
        raise ChildDied(f"Mosquitto exited; see {broker.log_path}")
    for child in children:
        code = child.process.poll()
        if code is None or child.done_ok:
            continue
        if code == 0 and child.name in TRAPS:
            child.done_ok = True
            print(f"{child.name} replayed all its frames and stopped.", flush=True)
            continue
        raise ChildDied(
            f"{child.name} exited with code {code}; last lines of {child.log_path}:\n{child.tail()}"
        )


def _stop(children: list[Child], timeout_s: float = 20.0) -> None:
    for child in children:
        if child.process.poll() is None:
            child.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for child in children:
        try:
            child.process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop within %.0f s; killing it", child.name, timeout_s)
            child.process.kill()
            child.process.wait()


def _states(database: Path) -> dict[str, str]:
    try:
        with contextlib.closing(sqlite3.connect(database, timeout=5)) as db:
            return dict(db.execute("SELECT id, state FROM devices").fetchall())
    except sqlite3.Error:
        return {}


def _wait_stopped_stored(database: Path, traps: list[Child], timeout_s: float) -> None:
    """Until ingest has stored every trap's "stopped" (the broker and ingest are still up)."""
    deadline = time.monotonic() + timeout_s
    names = {t.name for t in traps}
    while time.monotonic() < deadline:
        states = _states(database)
        if all(states.get(name) == "stopped" for name in names):
            return
        time.sleep(0.2)
    log.warning("not every trap's 'stopped' status was stored: %s", _states(database))


def _on_sigterm(_signum: int, _frame: FrameType | None) -> None:
    raise DemoStopped


def _setup(workdir: Path, env: dict[str, str]) -> tuple[str, dict[str, DeviceCredentials], str]:
    """Schema, traps, login token, model, broker auth (in this process: each `trapline` command
    would start a Python of its own); (login token, trap credentials, broker auth config)."""
    from trapline.server.admin import (
        create_api_token,
        register_device,
        register_model,
        register_release,
        write_broker_auth,
    )
    from trapline.server.core.config import ServerSettings
    from trapline.server.db import make_engine, session_factory
    from trapline.server.migrate import upgrade

    settings = ServerSettings(
        database_url=env["TRAPLINE_SERVER_DATABASE_URL"],
        data_dir=Path(env["TRAPLINE_SERVER_DATA_DIR"]),
        mqtt_username=env["TRAPLINE_SERVER_MQTT_USERNAME"],
        mqtt_password=env["TRAPLINE_SERVER_MQTT_PASSWORD"],
    )
    upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    try:
        sessions = session_factory(engine)
        credentials = {device: register_device(sessions, device, f"Demo {device}") for device in TRAPS}
        login = create_api_token(sessions, "demo-admin", "admin")
        register_model(sessions, PACKAGED_MODEL, settings.release_keyring)
        # the model the traps run, as release 1: a rollout from the Rollouts page has one to go back to
        register_release(sessions, settings, PACKAGED_MODEL)
        write_broker_auth(sessions, settings, workdir / "mqtt")
    finally:
        engine.dispose()
    mqtt_dir = workdir / "mqtt"
    auth = f"allow_anonymous false\npassword_file {mqtt_dir / 'passwd'}\nacl_file {mqtt_dir / 'acl'}\n"
    return login, credentials, auth


def _start_server(
    server: list[Child], workdir: Path, env: dict[str, str], api_port: int, broker: MosquittoBroker
) -> None:
    """Start API, ingest, job worker and rollout controller into `server` (so that a failure
    half-way stops them); return once ingest has subscribed (the API may still be starting)."""
    for name, args in (
        ("api", ["server", "api", "--port", str(api_port)]),
        ("ingest", ["server", "ingest"]),
        ("worker", ["server", "worker"]),
        # the rollout controller: model releases to the traps (the Rollouts page)
        ("ota", ["server", "ota"]),
    ):
        server.append(_spawn(name, args, env, workdir / f"{name}.log"))
    deadline = time.monotonic() + 30
    while "subscribed" not in (workdir / "ingest.log").read_text(errors="replace"):
        _check(server, broker)  # traps publish only once ingest's persistent session exists
        if time.monotonic() > deadline:
            raise ChildDied(f"ingest did not subscribe; see {workdir / 'ingest.log'}")
        time.sleep(0.2)


def _start_traps(
    traps: list[Child],
    workdir: Path,
    credentials: dict[str, DeviceCredentials],
    port: int,
    api_url: str,
    frames: int,
) -> None:
    for device in TRAPS:
        trap_env = {
            **os.environ,
            "TRAPLINE_MQTT_PASSWORD": credentials[device].mqtt_password,
            "TRAPLINE_UPLOAD_TOKEN": credentials[device].upload_token,
        }
        config = _trap_config(workdir, device, port, api_url, frames)
        args = ["edge", "run", "--config", str(config)]
        traps.append(_spawn(device, args, trap_env, workdir / f"{device}.log"))


def _shut_down(database: Path, server: list[Child], traps: list[Child]) -> None:
    # a second Ctrl-C or SIGTERM must not cut the orderly stop short
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with contextlib.suppress(ValueError):
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    # traps first; the broker and ingest stay up until their "stopped" is stored
    _stop([t for t in traps if not t.done_ok])
    ingest_alive = all(c.process.poll() is None for c in server if c.name == "ingest")
    if traps and server and ingest_alive:
        _wait_stopped_stored(database, traps, STOPPED_WAIT_S)
    _stop(server)


def run_demo(frames: int = 200, seconds: float | None = None, workdir: Path | None = None) -> int:
    """Start everything, print where to look (CLI output), run until stopped. 0 after a clean
    stop; 1 when a part of the demo died."""
    workdir = (workdir or Path("var") / "demo").resolve()
    fresh_workdir(workdir)
    api_port = free_port()
    api_url = f"http://127.0.0.1:{api_port}"
    database = workdir / "trapline.sqlite"
    env = {
        **os.environ,
        "TRAPLINE_SERVER_DATABASE_URL": f"sqlite:///{database}",
        "TRAPLINE_SERVER_DATA_DIR": str(workdir / "data"),
        "TRAPLINE_SERVER_MQTT_HOST": "127.0.0.1",
        "TRAPLINE_SERVER_MQTT_USERNAME": INGEST_USER,
        "TRAPLINE_SERVER_MQTT_PASSWORD": os.urandom(12).hex(),
        # the demo's traps beat every 10 s: keep each beat, so the fleet charts fill in minutes
        "TRAPLINE_SERVER_HEARTBEAT_SAMPLE_S": "10",
    }
    login, credentials, auth = _setup(workdir, env)
    server: list[Child] = []
    traps: list[Child] = []
    previous_term = signal.signal(signal.SIGTERM, _on_sigterm)
    previous_int = signal.getsignal(signal.SIGINT)
    status = 0
    try:
        with MosquittoBroker(workdir / "broker", extra_config=auth) as broker:
            env["TRAPLINE_SERVER_MQTT_PORT"] = str(broker.port)
            try:
                _start_server(server, workdir, env, api_port, broker)
                _start_traps(traps, workdir, credentials, broker.port, api_url, frames)
                _wait_http(f"{api_url}/login", 60, server + traps)
                _deploy(api_url, login)
                print(f"\nTrapline demo is running (logs and data in {workdir}).")
                print(f"  Dashboard: {api_url}/")
                print(f"  Log in with the token: {login}")
                print(f"  API docs:  {api_url}/docs (after logging in)")
                print(f"Two traps replay {frames} sample frames each. Press Ctrl-C to stop.\n", flush=True)
                until = time.monotonic() + seconds if seconds else None
                while until is None or time.monotonic() < until:
                    _check(server + traps, broker)
                    time.sleep(0.5)
            except (KeyboardInterrupt, DemoStopped):
                print("stopping the demo", flush=True)
            except ChildDied as exc:
                print(f"\nthe demo stops: {exc}", file=sys.stderr, flush=True)
                status = 1
            finally:
                _shut_down(database, server, traps)
    finally:
        signal.signal(signal.SIGTERM, previous_term)
        with contextlib.suppress(ValueError, TypeError):
            signal.signal(signal.SIGINT, previous_int)
    return status


def _demo(args: argparse.Namespace) -> int:
    return run_demo(frames=args.frames, seconds=args.seconds, workdir=args.workdir)


def register(demo: argparse.ArgumentParser) -> None:
    demo.add_argument("--frames", type=int, default=200, help="frames each trap replays")
    demo.add_argument("--seconds", type=float, help="stop after this long (default: run until Ctrl-C)")
    demo.add_argument("--workdir", type=Path, help="demo folder, emptied at start (default var/demo)")
    demo.set_defaults(handler=_demo)
