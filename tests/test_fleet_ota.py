"""A fleet of three real agent processes, Mosquitto with per-trap credentials and the ACL, and the
server on loopback (API, ingest worker, rollout controller): a staged rollout reaches the canary,
then everyone; a tampered bundle and a downgrade are refused by every trap; a model that fails its
self-test is rolled back and the rollout halts; a download cut half-way resumes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import yaml
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tests.conftest import SAMPLES
from tests.server.conftest import RunningWorker
from tests.support.live_server import serving
from tests.support.netcut import CuttingProxy
from tests.support.ota import Release as KitRelease
from tests.support.ota import ReleaseKit
from trapline.cli.broker import MosquittoBroker
from trapline.edge.config import PACKAGED_MODEL
from trapline.server.api.main import create_app
from trapline.server.core.config import ServerSettings
from trapline.server.db import transaction
from trapline.server.ingest.worker import IngestWorker
from trapline.server.migrate import upgrade
from trapline.server.models import ApiToken, Device, DeviceModelStatus, DeviceRelease, Release, Rollout
from trapline.server.ota.commands import MqttCommandSender
from trapline.server.ota.controller import RolloutController
from trapline.server.ota.releases import register_release
from trapline.server.security import hash_token, write_mosquitto_auth

pytestmark = pytest.mark.slow

TRAPS = ("trap-01", "trap-02", "trap-03")
ADMIN = "fleet-admin-token-0123456789"
SERVER_USER, SERVER_PASSWORD = "trapline-server", "server-password-0123"


@dataclass
class Fleet:
    settings: ServerSettings
    sessions: sessionmaker[Session]
    api: httpx.Client
    proxy: CuttingProxy
    agents: dict[str, subprocess.Popen[bytes]]
    logs: dict[str, Path]

    def until(self, what: str, predicate: Callable[[Session], bool], timeout_s: float = 60) -> float:
        """Seconds until `predicate` held (fails the test with the agents' logs otherwise)."""
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            with self.sessions() as session:
                if predicate(session):
                    return time.monotonic() - started
            time.sleep(0.1)
        tails = "\n".join(f"--- {d}\n{p.read_text()[-2500:]}" for d, p in self.logs.items())
        pytest.fail(f"{what}: not within {timeout_s} s\n{tails}")

    def versions(self, session: Session) -> dict[str, str | None]:
        return {d.id: d.model_version for d in session.scalars(select(Device).where(Device.id.in_(TRAPS)))}

    def stages(self, session: Session, release_id: int) -> dict[str, list[str]]:
        rows = session.scalars(
            select(DeviceModelStatus)
            .where(DeviceModelStatus.release_id == release_id)
            .order_by(DeviceModelStatus.id)
        )
        found: dict[str, list[str]] = {}
        for row in rows:
            found.setdefault(row.device_id, []).append(row.stage)
        return found

    def reasons(self, session: Session, release_id: int, stage: str) -> dict[str, str]:
        rows = session.scalars(
            select(DeviceModelStatus).where(
                DeviceModelStatus.release_id == release_id, DeviceModelStatus.stage == stage
            )
        )
        return {r.device_id: r.reason or "" for r in rows}

    def rollout(self, release_id: int, **plan: object) -> int:
        response = self.api.post("/api/v1/rollouts", json={"release_id": release_id, **plan})
        assert response.status_code == 201, response.text
        return int(response.json()["id"])


@pytest.fixture
def fleet(tmp_path: Path, kit: ReleaseKit) -> Iterator[Fleet]:
    url = f"sqlite:///{tmp_path / 'server.sqlite'}"
    upgrade(url)
    passwords = {d: f"pw-{d}-0123456789" for d in TRAPS}
    tokens = {d: f"upload-{d}-0123456789" for d in TRAPS}
    passwd, acl = write_mosquitto_auth(
        tmp_path / "mqtt", "trapline", passwords, {SERVER_USER: SERVER_PASSWORD}
    )
    auth = f"allow_anonymous false\npassword_file {passwd}\nacl_file {acl}\n"
    with MosquittoBroker(tmp_path / "broker", extra_config=auth) as broker, ExitStack() as api_stack:
        settings = ServerSettings(
            database_url=url, data_dir=tmp_path / "data", mqtt_host="127.0.0.1", mqtt_port=broker.port,
            mqtt_username=SERVER_USER, mqtt_password=SERVER_PASSWORD, release_keyring=kit.keyring,
            ota_tick_s=0.3, mqtt_client_id="fleet-ingest",
        )  # fmt: skip
        app = create_app(settings)
        sessions: sessionmaker[Session] = app.state.sessions
        api_port = int(api_stack.enter_context(serving(app)).rsplit(":", 1)[1])  # stops after the rest
        with transaction(sessions) as session:
            session.add(
                ApiToken(name="ada", token_hash=hash_token(ADMIN), role="admin", created_at=datetime.now(UTC))
            )
            for device in TRAPS:
                session.add(Device(id=device, state="unknown", token_hash=hash_token(tokens[device])))
        worker = RunningWorker(IngestWorker(settings, sessions))
        sender = MqttCommandSender(settings)
        sender.start()
        controller = RolloutController(settings, sessions, sender)
        controller_thread = threading.Thread(target=controller.run, daemon=True)
        controller_thread.start()
        agents: dict[str, subprocess.Popen[bytes]] = {}
        logs: dict[str, Path] = {}
        with (
            CuttingProxy(api_port) as proxy,
            httpx.Client(
                base_url=f"http://127.0.0.1:{api_port}", headers={"Authorization": f"Bearer {ADMIN}"}
            ) as api,
        ):
            server_url = f"http://127.0.0.1:{proxy.port}"  # the traps reach the server through the proxy
            for device in TRAPS:
                folder = tmp_path / device
                config = {
                    "device_id": device,
                    # slow frames: three agents, a broker and the server share two cores
                    "source": {"type": "replay", "files": [str(SAMPLES)], "count": 100_000, "interval_s": 2.0},
                    "mqtt": {"host": "127.0.0.1", "port": broker.port, "username": device,
                             "backoff_min_s": 1, "backoff_max_s": 2},
                    "spool": {"path": str(folder / "state" / "spool.sqlite")},
                    "quarantine_dir": str(folder / "quarantine"),
                    "model": {"keyring": str(kit.keyring)},
                    "upload": {"url": server_url},
                    "ota": {"health_window_s": 1.0, "retry_min_s": 0.5, "window": {"min_disk_free_mb": 0}},
                    "heartbeat_interval_s": 5,
                }  # fmt: skip
                folder.mkdir()
                (folder / "agent.yaml").write_text(yaml.safe_dump(config))
                logs[device] = folder / "agent.log"
                env = {**os.environ, "PYTHONUNBUFFERED": "1", "TRAPLINE_MQTT_PASSWORD": passwords[device],
                       "TRAPLINE_UPLOAD_TOKEN": tokens[device]}  # fmt: skip
                with logs[device].open("ab") as log_file:
                    agents[device] = subprocess.Popen(
                        [sys.executable, "-m", "trapline.cli", "edge", "run", "--config", str(folder / "agent.yaml")],
                        stdout=log_file, stderr=log_file, env=env,
                    )  # fmt: skip
            try:
                yield Fleet(settings, sessions, api, proxy, agents, logs)
            finally:
                for agent in agents.values():
                    agent.send_signal(signal.SIGTERM)
                for agent in agents.values():
                    try:
                        agent.wait(30)
                    except subprocess.TimeoutExpired:
                        agent.kill()
                controller.stop()
                controller_thread.join(10)
                sender.stop()
                worker.stop()


def test_a_fleet_takes_a_staged_release_and_refuses_what_it_must(
    fleet: Fleet, kit: ReleaseKit, release_v2: KitRelease
) -> None:
    v3, v4 = kit.build("3"), kit.failing_self_test("4")
    with transaction(fleet.sessions) as session:
        ids = {
            version: register_release(session, fleet.settings, path).id
            for version, path in (
                ("1", PACKAGED_MODEL),
                ("2", release_v2.archive),
                ("3", v3.archive),
                ("4", v4.archive),
            )
        }
    # what an attacker with the server's disk would do: another model under release 3's name, its
    # archive hash updated to match, the signed manifest untouched
    tampered = kit.tampered(v3)
    with transaction(fleet.sessions) as session:
        release = session.get(Release, ids["3"])
        assert release is not None and release.archive_file is not None
        (fleet.settings.data_dir / "releases" / release.archive_file).write_bytes(
            tampered.archive.read_bytes()
        )
        release.bundle_sha256, release.size_bytes = tampered.sha256, tampered.size
    fleet.until("three traps online with the packaged model",
                lambda s: fleet.versions(s) == dict.fromkeys(TRAPS, "1"), 90)  # fmt: skip
    assert fleet.api.put("/api/v1/groups/canary", json={"devices": ["trap-01"]}).status_code == 200

    # 1. staged: the canary first (its download cut half-way, then resumed), then everyone
    fleet.proxy.cut_next_after = release_v2.size // 2
    started = time.monotonic()
    staged = fleet.rollout(ids["2"], canary_group="canary", percentages=[100], spread_s=2)
    fleet.until("the canary runs v2", lambda s: fleet.versions(s)["trap-01"] == "2")
    with fleet.sessions() as session:
        told = {
            r.device_id for r in session.scalars(select(DeviceRelease)) if r.desired_release_id == ids["2"]
        }
    fleet.until("the whole fleet runs v2", lambda s: fleet.versions(s) == dict.fromkeys(TRAPS, "2"))
    release_to_fleet_s = time.monotonic() - started
    fleet.until("the rollout completes", lambda s: s.get(Rollout, staged).state == "completed")  # type: ignore[union-attr]
    with fleet.sessions() as session:
        stages = fleet.stages(session, ids["2"])
        canary_installed = session.scalar(
            select(DeviceModelStatus.received_at).where(
                DeviceModelStatus.device_id == "trap-01", DeviceModelStatus.stage == "installed"
            )
        )
        others_first = session.scalar(
            select(DeviceModelStatus.received_at)
            .where(
                DeviceModelStatus.device_id.in_(["trap-02", "trap-03"]),
                DeviceModelStatus.release_id == ids["2"],
            )
            .order_by(DeviceModelStatus.id)
        )
        resumed = fleet.reasons(session, ids["2"], "downloading")
    assert "installed" in stages["trap-01"] and stages["trap-01"][-1] == "installed"
    assert "retrying" in stages["trap-01"]  # the cut download ...
    assert resumed["trap-01"].startswith("resuming at byte")  # ... resumed where it stopped
    assert told in ({"trap-01"}, set(TRAPS))  # the others were told only after the canary
    assert canary_installed is not None and others_first is not None and others_first > canary_installed
    assert fleet.proxy.cut == 1
    clean = sorted(fleet.proxy.response_bytes[2:])  # the two other traps' downloads
    cut_and_resumed = sum(fleet.proxy.response_bytes[:2])

    # 2. a tampered bundle: every trap refuses it and keeps v2
    fleet.rollout(ids["3"], percentages=[100], max_failure_percent=100)
    fleet.until(
        "every trap refuses the tampered bundle", lambda s: len(fleet.reasons(s, ids["3"], "refused")) == 3
    )
    with fleet.sessions() as session:
        assert all(
            "does not match its sha256" in r for r in fleet.reasons(session, ids["3"], "refused").values()
        )
        assert fleet.versions(session) == dict.fromkeys(TRAPS, "2")

    # 3. a downgrade without a signed rollback: every trap refuses it before downloading
    downloads = len(fleet.proxy.response_bytes)
    fleet.rollout(ids["1"], percentages=[100], max_failure_percent=100)
    fleet.until("every trap refuses the downgrade", lambda s: len(fleet.reasons(s, ids["1"], "refused")) == 3)
    with fleet.sessions() as session:
        assert all(
            "older than the running v2" in r for r in fleet.reasons(session, ids["1"], "refused").values()
        )
        assert fleet.versions(session) == dict.fromkeys(TRAPS, "2")
    assert len(fleet.proxy.response_bytes) == downloads

    # 4. a model that fails its self-test: the canary goes back by itself, the rollout halts
    failing = fleet.rollout(ids["4"], canary_group="canary", percentages=[100])
    fleet.until("the rollout halts", lambda s: s.get(Rollout, failing).state == "halted")  # type: ignore[union-attr]
    with fleet.sessions() as session:
        rolled_back = fleet.reasons(session, ids["4"], "rolled_back")
        assert list(rolled_back) == ["trap-01"] and rolled_back["trap-01"].startswith("self-test failed")
        assert set(fleet.stages(session, ids["4"])) == {"trap-01"}  # the others never heard of it
        assert fleet.versions(session) == dict.fromkeys(TRAPS, "2")
        assert "self-test failed" in (session.get(Rollout, failing).reason or "")  # type: ignore[union-attr]
    back = fleet.api.post(f"/api/v1/rollouts/{failing}/rollback")
    assert back.status_code == 200 and back.json()["going_back"] == {"trap-01": ids["2"]}
    page = fleet.api.get("/rollouts", cookies={"trapline_token": ADMIN}).text
    assert 'data-state="rolled_back"' in page and "trapline-nano v2" in page
    assert all(agent.poll() is None for agent in fleet.agents.values())  # nobody crashed on the way
    print(
        f"\nfleet: release to all three traps running it {release_to_fleet_s:.1f} s"
        f" (canary first, 2 s download spread); download bytes: cut + resumed {cut_and_resumed},"
        f" clean {clean}"
    )
