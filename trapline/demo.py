"""`make demo`: a real Mosquitto, two traps replaying the sample photos through the real agent,
and a subscriber that shows what the fleet published."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from trapline.broker import MosquittoBroker

log = logging.getLogger(__name__)

SAMPLES = Path(__file__).resolve().parent.parent / "edge" / "samples"
TRAPS = ("trap-01", "trap-02")


class FleetListener:
    """Subscribes to every trap's topics and keeps what arrived."""

    def __init__(self, port: int) -> None:
        self.messages: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.status: dict[str, str] = {}
        self._lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="demo-listener")
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe("trapline/+/+", qos=1)
        self.client.loop_start()

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        _, device, kind = msg.topic.split("/", 2)
        payload = json.loads(msg.payload)
        with self._lock:
            if kind == "status":
                self.status[device] = payload["state"]
            else:
                self.messages[f"{device}/{kind}"].append(payload)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _write_config(workdir: Path, device: str, port: int, frames: int) -> Path:
    config = {
        "device_id": device,
        "source": {
            "type": "replay",
            "files": [str(SAMPLES)],
            "count": frames,
            "interval_s": 0.2,
            "burst_size": 4,
            "burst_pause_s": 1.5,
            "run_name": "demo",
        },
        "mqtt": {"host": "127.0.0.1", "port": port},
        "spool": {"path": str(workdir / device / "spool.sqlite")},
        "quarantine_dir": str(workdir / device / "quarantine"),
        "bursts": {"gap_s": 1.0},
        "heartbeat_interval_s": 5,
    }
    path = workdir / f"{device}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run_demo(frames: int = 40) -> int:
    """Run the demo and print a summary (CLI output)."""
    with tempfile.TemporaryDirectory(prefix="trapline-demo-") as tmp:
        workdir = Path(tmp)
        with MosquittoBroker(workdir / "broker") as broker:
            listener = FleetListener(broker.port)
            print(f"Mosquitto on 127.0.0.1:{broker.port}; {len(TRAPS)} traps replay {frames} frames each")
            agents = [
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "trapline.cli",
                        "--log-level",
                        "warning",
                        "edge",
                        "run",
                        "--config",
                        str(_write_config(workdir, device, broker.port, frames)),
                    ],
                    env={**os.environ},
                )
                for device in TRAPS
            ]
            codes = [agent.wait() for agent in agents]
            time.sleep(0.5)
            listener.close()
        _print_summary(listener, frames)
        return 0 if all(code == 0 for code in codes) else 1


def _print_summary(listener: FleetListener, frames: int) -> None:
    print()
    print(f"{'trap':10s} {'status':8s} {'frames':>7s} {'with animal':>12s} {'sequences':>10s}  categories")
    for device in TRAPS:
        detections = listener.messages[f"{device}/detections"]
        ids = {m["id"] for m in detections}
        cats: Counter[str] = Counter(d["category"] for m in detections for d in m["detections"])
        animal_frames = sum(any(d["category"] == "animal" for d in m["detections"]) for m in detections)
        sequences = len(listener.messages[f"{device}/sequences"])
        print(
            f"{device:10s} {listener.status.get(device, '?'):8s} {len(ids):>4d}/{frames:<3d}"
            f" {animal_frames:>11d} {sequences:>10d}  {dict(cats)}"
        )
    sample = next(iter(listener.messages.get(f"{TRAPS[0]}/detections", [])), None)
    if sample:
        print("\nOne detection message as published:")
        print(json.dumps(sample, indent=1)[:1500])
