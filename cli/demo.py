"""`make demo`: Mosquitto with per-trap credentials, the server (API + dashboard + ingest), and
two traps replaying the sample photos through the real agent. Prints the dashboard URL and a
login token, then runs until Ctrl-C (or `--seconds`)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

from trapline.cli.broker import MosquittoBroker, free_port
from trapline.edge.config import PACKAGED_MODEL, PACKAGED_SAMPLES

log = logging.getLogger(__name__)

TRAPS = ("trap-01", "trap-02")
INGEST_USER = "trapline-ingest"
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


def _cli(*args: str, env: dict[str, str]) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "trapline.cli", "--log-level", "warning", *args],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


def _spawn(args: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log_file:
        return subprocess.Popen(
            [sys.executable, "-m", "trapline.cli", "--log-level", "info", *args],
            env=env,
            stdout=log_file,
            stderr=log_file,
        )


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


def _wait_http(url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
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


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()


def run_demo(frames: int = 200, seconds: float | None = None, workdir: Path | None = None) -> int:
    """Start everything, print where to look (CLI output), run until stopped."""
    workdir = (workdir or Path("var") / "demo").resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    for stale in workdir.glob("*"):  # a fresh demo every time
        if stale.is_file():
            stale.unlink()
    api_port = free_port()
    api_url = f"http://127.0.0.1:{api_port}"
    ingest_password = os.urandom(12).hex()
    env = {
        **os.environ,
        "TRAPLINE_SERVER_DATABASE_URL": f"sqlite:///{workdir / 'trapline.sqlite'}",
        "TRAPLINE_SERVER_DATA_DIR": str(workdir / "data"),
        "TRAPLINE_SERVER_MQTT_HOST": "127.0.0.1",
        "TRAPLINE_SERVER_MQTT_USERNAME": INGEST_USER,
        "TRAPLINE_SERVER_MQTT_PASSWORD": ingest_password,
        # the demo's traps beat every 10 s: keep each beat, so the fleet charts fill in minutes
        "TRAPLINE_SERVER_HEARTBEAT_SAMPLE_S": "10",
    }
    _cli("server", "migrate", env=env)
    credentials: dict[str, tuple[str, str]] = {}
    for device in TRAPS:
        out = _cli("server", "device", "add", device, "--name", f"Demo {device}", "--credentials", env=env)
        mqtt_password = out.split("password ")[1].split()[0]
        upload_token = out.split("upload token ")[1].split()[0]
        credentials[device] = (mqtt_password, upload_token)
    login = _cli("server", "token", "create", "demo-admin", "--role", "admin", env=env).strip()
    _cli("server", "model", "add", str(PACKAGED_MODEL), env=env)
    # the model the traps run, as release 1: a rollout from the Rollouts page has one to go back to
    _cli("server", "release", "add", str(PACKAGED_MODEL), env=env)
    _cli("server", "mqtt-auth", "--out", str(workdir / "mqtt"), env=env)
    mqtt_dir = workdir / "mqtt"
    auth = f"allow_anonymous false\npassword_file {mqtt_dir / 'passwd'}\nacl_file {mqtt_dir / 'acl'}\n"
    processes: list[subprocess.Popen[bytes]] = []
    traps: list[subprocess.Popen[bytes]] = []
    with MosquittoBroker(workdir / "broker", extra_config=auth) as broker:
        env["TRAPLINE_SERVER_MQTT_PORT"] = str(broker.port)
        try:
            processes.append(_spawn(["server", "api", "--port", str(api_port)], env, workdir / "api.log"))
            processes.append(_spawn(["server", "ingest"], env, workdir / "ingest.log"))
            # the job worker: dataset exports, feature extraction, clustering, retraining
            processes.append(_spawn(["server", "worker"], env, workdir / "worker.log"))
            # the rollout controller: model releases to the traps (the Rollouts page)
            processes.append(_spawn(["server", "ota"], env, workdir / "ota.log"))
            _wait_http(f"{api_url}/login", 60)
            _deploy(api_url, login)
            time.sleep(1.0)  # the ingest worker subscribes before traps publish
            for device in TRAPS:
                trap_env = {
                    **os.environ,
                    "TRAPLINE_MQTT_PASSWORD": credentials[device][0],
                    "TRAPLINE_UPLOAD_TOKEN": credentials[device][1],
                }
                config = _trap_config(workdir, device, broker.port, api_url, frames)
                traps.append(
                    _spawn(["edge", "run", "--config", str(config)], trap_env, workdir / f"{device}.log")
                )
            print(f"\nTrapline demo is running (logs and data in {workdir}).")
            print(f"  Dashboard: {api_url}/")
            print(f"  Log in with the token: {login}")
            print(f"  API docs:  {api_url}/docs")
            print(f"Two traps replay {frames} sample frames each. Press Ctrl-C to stop.\n", flush=True)
            deadline = time.monotonic() + seconds if seconds else None
            while deadline is None or time.monotonic() < deadline:
                time.sleep(0.5)
        except KeyboardInterrupt:
            print("stopping the demo")
        finally:
            # traps first, so the server still hears their "stopped"
            _stop(traps)
            time.sleep(1.0)
            _stop(processes)
    return 0


def _demo(args: argparse.Namespace) -> int:
    return run_demo(frames=args.frames, seconds=args.seconds)


def register(demo: argparse.ArgumentParser) -> None:
    demo.add_argument("--frames", type=int, default=200, help="frames each trap replays")
    demo.add_argument("--seconds", type=float, help="stop after this long (default: run until Ctrl-C)")
    demo.set_defaults(handler=_demo)
