"""Fleet benchmark: N simulated traps against the real broker, ingest and database.

For each database (SQLite, PostgreSQL) and fleet size (100 and 1,000 traps), with `trapline server
ingest` worker processes and Mosquitto on this machine:

1. steady: every trap connects (retained `online`) and publishes at busy-hour rates (a frame every
   10 s on average, a sequence summary every third frame, a heartbeat a minute at QoS 0);
2. outage: the swarm process is killed, every connection dies at once and the broker publishes
   each trap's Last Will (counted: every trap must end up `offline`);
3. reconnect storm: all traps come back at once and flush their backlog (`--backlog` messages
   each: three frames, then their sequence summary, and so on) as fast as their window of 100
   unacknowledged messages allows;
   time to drain = first reconnect to last row; every id, box and summary is counted;
4. after the storm: steady again, for the delay once drained.

Delay is publish-to-row: `processed_at` is stamped when the trap sends, and the row's visibility
is its commit time on PostgreSQL (track_commit_timestamp) or the moment a 50 ms poller first sees
it on SQLite. Memory: peak RSS of Mosquitto and of the ingest workers. The baseline, measured in
the same run: a bare subscriber that only receives the same storm (what the broker and one Python
client can move at all).

Default: a short run (a backlog of 40 messages per trap). `--full`: the 1,000-trap storm with a
day's backlog, a message a minute (1,440 each: 1.08 M frames + 0.36 M summaries = 1.44 M messages),
into PostgreSQL.
Run: `python -m bench.fleet [--full] [--traps 100,1000] [--backlog N] [--databases sqlite,postgresql]`.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psutil
from paho.mqtt.enums import CallbackAPIVersion
from rich.console import Console
from rich.table import Table
from sqlalchemy import create_engine, text

from bench.swarm import SwarmReport, SwarmSpec, device_name, run_swarm, storm_frames
from tests.support.postgres import TemporaryPostgres, available
from trapline.cli.broker import MosquittoBroker
from trapline.server.ingest import mqtt_speedup
from trapline.server.migrate import upgrade

STEADY_S = float(
    os.environ.get("BENCH_FLEET_STEADY_S", "15")
)  # seconds of busy-hour traffic before the outage
AFTER_STORM_S = float(os.environ.get("BENCH_FLEET_AFTER_S", "10"))  # and after the storm has drained
SPAWN = multiprocessing.get_context("spawn")


@dataclass
class PhaseResult:
    name: str
    frames: int
    messages: int
    seconds: float
    delays: list[float]
    lost: int = 0
    duplicated: int = 0
    note: str = ""

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float | None:
        if not self.delays:
            return None
        ordered = sorted(self.delays)
        return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


@dataclass
class RunResult:
    database: str
    traps: int
    workers: int
    phases: list[PhaseResult] = field(default_factory=list)
    broker_mb: float = 0.0
    ingest_mb: float = 0.0
    wills: int = 0
    load: tuple[float, float] = (0.0, 0.0)


class MemoryWatch:
    """Peak RSS of some processes, sampled twice a second."""

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self.groups = groups
        self.peaks = dict.fromkeys(groups, 0.0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            for name, pids in self.groups.items():
                total = 0
                for pid in pids:
                    with suppress(psutil.Error):
                        total += psutil.Process(pid).memory_info().rss
                self.peaks[name] = max(self.peaks[name], total / 2**20)

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        return self.peaks


class Rows:
    """What the database holds, per phase (the phase is each frame's model.version)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.sqlite = url.startswith("sqlite")
        self.engine = create_engine(url, pool_pre_ping=True)
        # SQLite: when each row was first seen (rowid order), polled every 50 ms
        self.seen: dict[str, list[float]] = {}
        self._last_rowid = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if self.sqlite:
            self._thread = threading.Thread(target=self._poll_sqlite, daemon=True)
            self._thread.start()

    def _poll_sqlite(self) -> None:
        path = self.url.removeprefix("sqlite:///")
        db = sqlite3.connect(path, timeout=30)
        while not self._stop.wait(0.05):
            now = time.time()
            rows = db.execute(
                "SELECT rowid, model_version, processed_at FROM detection_frames"
                " WHERE rowid > ? ORDER BY rowid",
                (self._last_rowid,),
            ).fetchall()
            for rowid, phase, processed in rows:
                sent = datetime.fromisoformat(processed).replace(tzinfo=UTC).timestamp()
                self.seen.setdefault(phase, []).append(now - sent)
                self._last_rowid = rowid
        db.close()

    def count(self, phase: str) -> int:
        if self.sqlite:
            return len(self.seen.get(phase, []))
        with self.engine.connect() as connection:
            return int(
                connection.execute(
                    text("SELECT count(*) FROM detection_frames WHERE model_version = :p"), {"p": phase}
                ).scalar_one()
            )

    def delays(self, phase: str) -> list[float]:
        if self.sqlite:
            return list(self.seen.get(phase, []))
        with self.engine.connect() as connection:
            rows = connection.execute(
                text(
                    "SELECT extract(epoch FROM pg_xact_commit_timestamp(xmin) - processed_at)"
                    " FROM detection_frames WHERE model_version = :p"
                ),
                {"p": phase},
            )
            return [float(r[0]) for r in rows]

    def audit(self, phase: str, traps: int, frames_each: int | None) -> tuple[int, int, dict[str, int]]:
        """(lost, duplicated, totals): frames per trap against what was sent, boxes against frames."""
        with self.engine.connect() as connection:
            per_trap: dict[str, int] = dict(
                connection.execute(
                    text(
                        "SELECT device_id, count(*) FROM detection_frames WHERE model_version = :p"
                        " GROUP BY device_id"
                    ),
                    {"p": phase},
                ).all()
            )
            boxes = connection.execute(
                text(
                    "SELECT count(*) FROM detections d JOIN detection_frames f ON f.id = d.frame_id"
                    " WHERE f.model_version = :p"
                ),
                {"p": phase},
            ).scalar_one()
            expected_boxes = connection.execute(
                text(
                    "SELECT coalesce(sum(detection_count), 0) FROM detection_frames WHERE model_version = :p"
                ),
                {"p": phase},
            ).scalar_one()
            sequences = connection.execute(
                text("SELECT count(*) FROM sequences WHERE id LIKE :pattern"), {"pattern": f"%:seq-{phase}%"}
            ).scalar_one()
            dead = connection.execute(text("SELECT count(*) FROM dead_letters")).scalar_one()
        lost = 0
        if frames_each is not None:
            lost = sum(max(0, frames_each - per_trap.get(device_name(i), 0)) for i in range(traps))
        duplicated = max(0, int(boxes) - int(expected_boxes))
        totals = {
            "frames": sum(per_trap.values()),
            "boxes": int(boxes),
            "sequences": int(sequences),
            "dead": int(dead),
        }
        return lost, duplicated, totals

    def states(self) -> dict[str, int]:
        with self.engine.connect() as connection:
            return dict(connection.execute(text("SELECT state, count(*) FROM devices GROUP BY state")).all())

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.engine.dispose()


def _register(url: str, traps: int) -> None:
    upgrade(url)
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(
            text("INSERT INTO devices (id, state, clock_suspect) VALUES (:id, 'unknown', false)"),
            [{"id": device_name(i)} for i in range(traps)],
        )
    engine.dispose()


def _split(index: int, workers: int) -> dict[str, str]:
    """Worker `index` of `workers`: one takes everything; two split by topic (detections, the
    rest), each with its own persistent session; more share through $share."""
    if workers == 1:
        return {}
    if workers == 2:
        topics = "detections" if index == 0 else "status,sequences,heartbeat,ota"
        return {"TRAPLINE_SERVER_INGEST_TOPICS": topics}
    return {"TRAPLINE_SERVER_MQTT_SHARE_GROUP": "ingest"}


@contextmanager
def _ingest(url: str, port: int, workers: int, logs: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    env = {
        **os.environ,
        "TRAPLINE_SERVER_DATABASE_URL": url,
        "TRAPLINE_SERVER_DATA_DIR": str(logs / "data"),
        "TRAPLINE_SERVER_MQTT_HOST": "127.0.0.1",
        "TRAPLINE_SERVER_MQTT_PORT": str(port),
    }
    processes = []
    for index in range(workers):
        log_path = logs / f"ingest-{index}.log"
        with log_path.open("wb") as log_file:
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "trapline.cli", "--log-level", "info", "server", "ingest"],
                    env={
                        **env,
                        "TRAPLINE_SERVER_MQTT_CLIENT_ID": f"bench-ingest-{index}",
                        **_split(index, workers),
                    },
                    stdout=log_file,
                    stderr=log_file,
                )
            )
    try:
        deadline = time.monotonic() + 120
        for index in range(workers):  # the persistent sessions exist before any trap publishes
            while "subscribed" not in (logs / f"ingest-{index}.log").read_text(errors="replace"):
                if time.monotonic() > deadline or processes[index].poll() is not None:
                    raise RuntimeError((logs / f"ingest-{index}.log").read_text()[-2000:])
                time.sleep(0.1)
        yield processes
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()


def _swarm(spec: SwarmSpec) -> tuple[Any, Any]:
    queue = SPAWN.Queue()
    process = SPAWN.Process(target=run_swarm, args=(spec, queue), daemon=True)
    process.start()
    return process, queue


def _report(queue: Any, timeout_s: float) -> SwarmReport:
    report: SwarmReport = queue.get(timeout=timeout_s)
    if report.errors:
        raise RuntimeError(f"swarm failed: {report.errors}")
    return report


def _wait_rows(rows: Rows, phase: str, expected: int, timeout_s: float) -> float:
    """Until `expected` frames of `phase` are stored; the time they all were."""
    deadline = time.time() + timeout_s
    poll = 0.25 if expected < 200_000 else 1.0
    while (count := rows.count(phase)) < expected:
        if time.time() > deadline:
            raise RuntimeError(f"phase {phase}: {count} of {expected} frames stored after {timeout_s:.0f} s")
        time.sleep(poll)
    return time.time()


def _steady(
    rows: Rows, port: int, traps: int, phase: str, seconds: float, name: str
) -> tuple[PhaseResult, Any]:
    process, queue = _swarm(SwarmSpec("steady", port, 0, traps, phase, seconds=seconds))
    report = _report(queue, seconds + 300)
    _wait_rows(rows, phase, report.frames, 300)
    lost, duplicated, _ = rows.audit(phase, traps, None)
    messages = report.frames + report.sequences + report.heartbeats
    result = PhaseResult(
        name,
        report.frames,
        messages,
        report.published_at - report.started_at,
        rows.delays(phase),
        lost,
        duplicated,
    )
    return result, process


def run_fleet(
    database: str, url: str, traps: int, workers: int, backlog: int, work: Path, steady: bool = True
) -> RunResult:
    """One fleet against one database: steady (unless `steady` is off), outage, storm, steady again."""
    result = RunResult(database, traps, workers, load=(os.getloadavg()[0], 0.0))
    _register(url, traps)
    logs = work / f"{database}-{traps}-{workers}"
    logs.mkdir(parents=True)
    rows = Rows(url)
    with MosquittoBroker(logs / "broker") as broker, _ingest(url, broker.port, workers, logs) as processes:
        memory = MemoryWatch({"broker": [broker.pid or 0], "ingest": [p.pid for p in processes]})
        try:
            if steady:
                phase_a, swarm = _steady(rows, broker.port, traps, "a", STEADY_S, "steady")
                result.phases.append(phase_a)
            else:  # traps only connect, then the outage
                swarm, queue = _swarm(SwarmSpec("steady", broker.port, 0, traps, "a", seconds=0))
                _report(queue, 300)
            swarm.kill()  # the outage: every trap's connection dies at once
            deadline = time.time() + 60
            while rows.states().get("offline", 0) < traps and time.time() < deadline:
                time.sleep(0.5)
            result.wills = rows.states().get("offline", 0)
            storm, queue = _swarm(SwarmSpec("storm", broker.port, 0, traps, "b", backlog=backlog))
            report = _report(queue, 3600)
            started = report.connected_at  # every trap is back
            drained = _wait_rows(rows, "b", traps * storm_frames(backlog), 3600)
            lost, duplicated, totals = rows.audit("b", traps, storm_frames(backlog))
            storm.join(60)
            note = (
                f"{totals['frames']} frames, {totals['boxes']} boxes, {totals['sequences']} summaries, "
                f"{totals['dead']} dead letters; published in {report.published_at - started:.1f} s"
            )
            result.phases.append(
                PhaseResult(
                    "storm",
                    report.frames,
                    report.frames + report.sequences,
                    drained - started,
                    rows.delays("b"),
                    lost,
                    duplicated,
                    note,
                )
            )
            # the delay once the storm has drained
            phase_c, swarm = _steady(rows, broker.port, traps, "c", AFTER_STORM_S, "after the storm")
            result.phases.append(phase_c)
            swarm.kill()
        finally:
            peaks = memory.stop()
            rows.close()
        result.broker_mb, result.ingest_mb = peaks["broker"], peaks["ingest"]
    result.load = (result.load[0], os.getloadavg()[0])
    return result


def bare_subscriber(traps: int, backlog: int, work: Path) -> PhaseResult:
    """The baseline: the same storm into a subscriber that only counts what it receives."""
    expected = traps * backlog
    received = [0]
    done = threading.Event()

    def on_message(_c: Any, _u: Any, _m: Any) -> None:
        received[0] += 1
        if received[0] >= expected:
            done.set()

    mqtt_speedup.apply()  # the same MQTT 5 decoding as the ingest worker's
    with MosquittoBroker(work / "baseline-broker") as broker:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-bare", protocol=mqtt.MQTTv5)
        client.on_message = on_message
        client.connect("127.0.0.1", broker.port)
        client.subscribe([("trapline/+/detections", 1), ("trapline/+/sequences", 1)])
        client.loop_start()
        time.sleep(1.0)
        storm, queue = _swarm(SwarmSpec("storm", broker.port, 0, traps, "b", backlog=backlog))
        started = _report(queue, 3600).connected_at  # every trap is back
        done.wait(3600)
        elapsed = time.time() - started
        storm.join(60)
        client.loop_stop()
    frames = traps * storm_frames(backlog)
    return PhaseResult("storm", frames, received[0], elapsed, [], note="bare subscriber")


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def build_table(results: list[RunResult], baseline: PhaseResult | None, backlog: int) -> Table:
    table = Table(
        title=f"Fleet: traps against Mosquitto, ingest and the database (storm: {backlog} messages per trap)"
    )
    for column in (
        "database",
        "traps",
        "workers",
        "phase",
        "messages",
        "messages/s",
        "vs bare subscriber",
        "p50 delay s",
        "p99 delay s",
        "broker MB",
        "ingest MB",
        "lost",
        "duplicated",
        "load",
    ):
        table.add_column(column, justify="left" if column in ("database", "phase") else "right")
    if baseline is not None:
        table.add_row(
            "(bare subscriber)",
            "",
            "1",
            "storm",
            f"{baseline.messages:,}",
            f"{baseline.rate:,.0f}",
            "1.00",
            "–",
            "–",
            "–",
            "–",
            "–",
            "–",
            "",
        )
    for run in results:
        for phase in run.phases:
            ratio = f"{phase.rate / baseline.rate:.2f}" if baseline and phase.name == "storm" else ""
            table.add_row(
                run.database,
                f"{run.traps:,}",
                str(run.workers),
                phase.name,
                f"{phase.messages:,}",
                f"{phase.rate:,.0f}",
                ratio,
                _fmt(phase.percentile(0.5)),
                _fmt(phase.percentile(0.99)),
                f"{run.broker_mb:.0f}",
                f"{run.ingest_mb:.0f}",
                str(phase.lost),
                str(phase.duplicated),
                f"{run.load[0]:.1f}→{run.load[1]:.1f}",
            )
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--full", action="store_true", help="1,000 traps with a day's backlog into PostgreSQL"
    )
    parser.add_argument("--traps", default="100,1000", help="fleet sizes, comma-separated")
    parser.add_argument(
        "--backlog", type=int, default=40, help="messages per trap in the storm (3 frames, 1 summary, ...)"
    )
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--workers", default="1,2", help="ingest workers for the storm-only runs")
    parser.add_argument("--no-baseline", action="store_true")
    args = parser.parse_args(argv)
    if args.full:
        args.traps, args.backlog, args.databases = "1000", 1440, "postgresql"
    sizes = [int(n) for n in args.traps.split(",")]
    databases = [d for d in args.databases.split(",") if d == "sqlite" or available()]
    worker_counts = [int(n) for n in args.workers.split(",")]
    console = Console(width=200)
    console.print(f"load average before: {os.getloadavg()}")
    results: list[RunResult] = []
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        work = Path(tmp)
        baseline = None if args.no_baseline else bare_subscriber(max(sizes), args.backlog, work)
        postgres = None
        if "postgresql" in databases:
            # commit times give every row's exact publish-to-row delay; fsync on, as in production
            postgres = TemporaryPostgres({"track_commit_timestamp": "on", "fsync": "on"}).start()
        try:
            for database in databases:
                for traps in sizes:
                    for workers in sorted(set(worker_counts)):
                        # the whole scenario with one worker; more workers: outage, storm, after
                        full_scenario = workers == min(worker_counts) and not args.full
                        if not full_scenario and traps != max(sizes):
                            continue
                        name = f"{database}_{traps}_{workers}"
                        url = (
                            f"sqlite:///{work / name}.sqlite"
                            if database == "sqlite"
                            else postgres.create_database(name)
                            if postgres
                            else ""
                        )
                        console.print(f"{database}, {traps} traps, {workers} worker(s)…")
                        results.append(
                            run_fleet(database, url, traps, workers, args.backlog, work, full_scenario)
                        )
                        for phase in results[-1].phases:
                            console.print(
                                f"  {phase.name}: {phase.messages} messages in {phase.seconds:.1f} s"
                                f" ({phase.rate:.0f}/s), p99 {_fmt(phase.percentile(0.99))} s,"
                                f" lost {phase.lost}, duplicated {phase.duplicated}. {phase.note}"
                            )
                        console.print(f"  Last Wills stored: {results[-1].wills} of {traps}")
        finally:
            if postgres is not None:
                postgres.stop()
    console.print(build_table(results, baseline, args.backlog))
    console.print(f"load average after: {os.getloadavg()}")
    return 0 if all(p.lost == 0 and p.duplicated == 0 for r in results for p in r.phases) else 1


if __name__ == "__main__":
    raise SystemExit(main())
