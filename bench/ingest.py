"""Ingest benchmark: detection messages/s from a real Mosquitto into SQLite and PostgreSQL.

For 1 and 2 ingest worker processes (`trapline server ingest`, MQTT 5 shared subscription) and
each database: publish N messages at QoS 1 as fast as one publisher can, then measure messages/s
(first publish to last row) and the publish-to-row delay (p50, p99). The baseline, measured in
the same run, is a bare subscriber that only receives: what the broker and one Python client can
move at all. Run: `python -m bench.ingest [--messages N]`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from sqlalchemy import func, select

from tests.support.postgres import TemporaryPostgres, available
from trapline.cli.broker import MosquittoBroker
from trapline.server.db import make_engine, session_factory, transaction
from trapline.server.migrate import upgrade
from trapline.server.models import DetectionFrame, Device

DEVICES = ("trap-01", "trap-02")
PACED_RATE = 2000  # messages/s: a fleet's busy hour, well below capacity


def _payload(device: str, number: int) -> bytes:
    now = datetime.now(UTC).isoformat(timespec="milliseconds")
    return (
        f'{{"schema":"trapline.detections/1","id":"{device}:{number:09d}","device_id":"{device}",'
        f'"captured_at":"{now}","processed_at":"{now}","sequence_id":"{device}:seq:{number // 3:09d}",'
        f'"frame_index":{number % 3},"image":{{"file":"IMG_{number:05d}.JPG","sha256":"{"a" * 64}",'
        f'"width":2048,"height":1536,"night":false}},"model":{{"name":"trapline-nano","version":"1",'
        f'"sha256":"{"b" * 64}"}},"inference_ms":15.0,"detections":[{{"category":"animal","conf":0.8,'
        f'"bbox":[0.1,0.2,0.3,0.4]}}]}}'
    ).encode()


def _publish(port: int, messages: int, rate: float | None = None) -> dict[str, float]:
    """Publish (as fast as possible, or paced at `rate` per second); message id -> publish time."""
    sent: dict[str, float] = {}
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-publisher", protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    infos = []
    start = time.time()
    for number in range(messages):
        if rate and number % 50 == 0:
            ahead = start + number / rate - time.time()
            if ahead > 0:
                time.sleep(ahead)
        device = DEVICES[number % 2]
        sent[f"{device}:{number:09d}"] = time.time()
        infos.append(client.publish(f"trapline/{device}/detections", _payload(device, number), qos=1))
    for info in infos:
        info.wait_for_publish(60)
    client.loop_stop()
    client.disconnect()
    return sent


def _baseline(tmp: Path, messages: int) -> float:
    """messages/s a bare QoS 1 subscriber receives."""
    with MosquittoBroker(tmp / "baseline-broker") as broker:
        got = threading.Event()
        count = [0]

        def on_message(_c: Any, _u: Any, _m: Any) -> None:
            count[0] += 1
            if count[0] == messages:
                got.set()

        sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-sub", protocol=mqtt.MQTTv5)
        sub.on_message = on_message
        sub.connect("127.0.0.1", broker.port)
        sub.subscribe("trapline/+/detections", qos=1)
        sub.loop_start()
        time.sleep(0.5)
        started = time.time()
        _publish(broker.port, messages)
        got.wait(300)
        elapsed = time.time() - started
        sub.loop_stop()
        return messages / elapsed


def _run(tmp: Path, url: str, workers: int, messages: int, rate: float | None = None) -> dict[str, float]:
    upgrade(url)
    engine = make_engine(url)
    sessions = session_factory(engine)
    with transaction(sessions) as session:
        for device in DEVICES:
            session.add(Device(id=device, state="unknown"))
    with MosquittoBroker(tmp / f"broker-{workers}-{engine.dialect.name}-{rate}") as broker:
        env = {
            **os.environ,
            "TRAPLINE_SERVER_DATABASE_URL": url,
            "TRAPLINE_SERVER_DATA_DIR": str(tmp / "data"),
            "TRAPLINE_SERVER_MQTT_HOST": "127.0.0.1",
            "TRAPLINE_SERVER_MQTT_PORT": str(broker.port),
        }
        logs = [tmp / f"ingest-{workers}-{engine.dialect.name}-{rate}-{i}.log" for i in range(workers)]
        procs = []
        for i, log_path in enumerate(logs):
            with log_path.open("wb") as log_file:
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "trapline.cli", "--log-level", "info", "server", "ingest"],
                        # two workers share the flood through $share (all of it is detections,
                        # so splitting by topic would not divide it; the broker is not restarted
                        # here, so $share's caveat does not apply); alone, the direct subscription
                        env={
                            **env,
                            "TRAPLINE_SERVER_MQTT_CLIENT_ID": f"bench-ingest-{i}",
                            **({"TRAPLINE_SERVER_MQTT_SHARE_GROUP": "ingest"} if workers > 1 else {}),
                        },
                        stdout=log_file,
                        stderr=log_file,
                    )
                )
        for log_path in logs:  # a message published before the subscription exists goes nowhere
            while "subscribed" not in log_path.read_text(errors="replace"):
                time.sleep(0.1)
        started = time.time()
        sent = _publish(broker.port, messages, rate)

        def stored() -> int:
            with sessions() as session:
                return int(session.scalar(select(func.count()).select_from(DetectionFrame)) or 0)

        deadline = time.time() + 600
        while stored() < messages and time.time() < deadline:
            time.sleep(0.05)
        elapsed = time.time() - started
        for proc in procs:
            proc.terminate()
            proc.wait(30)
        with sessions() as session:
            rows = session.execute(select(DetectionFrame.id, DetectionFrame.received_at)).all()
    engine.dispose()
    delays = sorted(received.timestamp() - sent[frame_id] for frame_id, received in rows)
    return {
        "stored": len(rows),
        "rate": len(rows) / elapsed,
        "p50": statistics.median(delays),
        "p99": delays[min(len(delays) - 1, int(len(delays) * 0.99))],
    }


def run_table(messages: int) -> Table:
    with tempfile.TemporaryDirectory() as tmp_name, Progress() as progress:
        tmp = Path(tmp_name)
        databases = ["sqlite"] + (["postgresql"] if available() else [])
        task = progress.add_task("baseline subscriber", total=2 + 2 * len(databases))
        baseline = _baseline(tmp, messages)
        progress.advance(task)
        results = []
        postgres = TemporaryPostgres().start() if "postgresql" in databases else None
        try:
            for database in databases:
                for workers in (1, 2):
                    progress.update(task, description=f"{database}, {workers} worker(s)")
                    name = f"{database}_{workers}"
                    url = (
                        f"sqlite:///{tmp / name}.sqlite"
                        if postgres is None or database == "sqlite"
                        else postgres.create_database(name)
                    )
                    results.append((database, workers, _run(tmp, url, workers, messages)))
                    progress.advance(task)
            progress.update(task, description=f"sqlite, paced at {PACED_RATE}/s")
            paced = _run(tmp, f"sqlite:///{tmp / 'paced'}.sqlite", 1, messages // 2, PACED_RATE)
            results.append((f"sqlite, paced {PACED_RATE}/s", 1, paced))
            progress.advance(task)
        finally:
            if postgres is not None:
                postgres.stop()
    table = Table(title=f"Ingest of {messages} detection messages (QoS 1, one publisher, 2 cores)")
    for column in (
        "database",
        "workers",
        "stored",
        "messages/s",
        "vs bare subscriber",
        "p50 delay s",
        "p99 delay s",
    ):
        table.add_column(column, justify="left" if column == "database" else "right")
    table.add_row("(bare subscriber)", "-", str(messages), f"{baseline:.0f}", "1.00", "-", "-")
    for database, workers, r in results:
        table.add_row(
            database,
            str(workers),
            f"{int(r['stored'])}",
            f"{r['rate']:.0f}",
            f"{r['rate'] / baseline:.2f}",
            f"{r['p50']:.3f}",
            f"{r['p99']:.3f}",
        )
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=20000)
    args = parser.parse_args(argv)
    Console(width=160).print(run_table(args.messages))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
