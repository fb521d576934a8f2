"""Model releases and rollouts on the server: registration, Range downloads, canary and stages,
automatic halts, pause / resume / roll back, retained commands on a real Mosquitto, the page."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from fastapi.testclient import TestClient
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tests.server.conftest import ADMIN, UPLOAD, VIEWER, accepted, seed, settings_for
from tests.support.live_server import serving
from tests.support.ota import Release as KitRelease
from tests.support.ota import ReleaseKit
from trapline.cli.broker import MosquittoBroker
from trapline.contracts import ModelCommand, utc_now
from trapline.edge.config import PACKAGED_MODEL
from trapline.files import file_sha256
from trapline.server.api.main import create_app
from trapline.server.core.config import ServerSettings
from trapline.server.db import transaction
from trapline.server.ingest.store import store_batch
from trapline.server.models import Device, DeviceModelStatus, DeviceRelease, ModelVersion, Release, Rollout
from trapline.server.ota.commands import MqttCommandSender, download_delay_s, publish_pending
from trapline.server.ota.releases import ReleaseError, add_rollback_grant, archive_path, register_release
from trapline.server.ota.rollouts import (
    RolloutError,
    RolloutPlan,
    advance,
    pause,
    resume,
    rollback,
    set_group,
)
from trapline.server.ota.rollouts import start_rollout as start

PACKAGED_SHA = file_sha256(PACKAGED_MODEL / "model.onnx")
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


@pytest.fixture
def settings(sqlite_url: str, tmp_path: Path, kit: ReleaseKit) -> ServerSettings:
    return settings_for(sqlite_url, tmp_path, release_keyring=kit.keyring)


def _sessions(sessions_for: Any, settings: ServerSettings) -> sessionmaker[Session]:
    return sessions_for(settings.database_url)  # type: ignore[no-any-return]


def _devices(sessions: sessionmaker[Session], count: int, model_sha256: str = PACKAGED_SHA) -> list[str]:
    ids = [f"trap-{n:02d}" for n in range(count)]
    with transaction(sessions) as session:
        for device_id in ids:
            session.add(Device(id=device_id, state="online", model_sha256=model_sha256))
    return ids


def _report(
    sessions: sessionmaker[Session], device_id: str, release_id: int, stage: str, reason: str = ""
) -> None:
    """An `ota` report through the ingest path (validation and storage), as the worker stores it."""
    payload = {"ts": utc_now().isoformat(), "release_id": release_id, "version": "2", "stage": stage,
               "reason": reason or None}  # fmt: skip
    with transaction(sessions) as session:
        store_batch(session, [accepted(f"trapline/{device_id}/ota", json.dumps(payload).encode())], [])


def _targets(sessions: sessionmaker[Session]) -> dict[str, int | None]:
    with sessions() as session:
        return {r.device_id: r.desired_release_id for r in session.scalars(select(DeviceRelease))}


def _tick(sessions: sessionmaker[Session]) -> list[str]:
    with transaction(sessions) as session:
        return advance(session, NOW)


def test_a_release_is_verified_stored_and_registered_once(
    settings: ServerSettings, sessions_for: Any, kit: ReleaseKit, release_v2: KitRelease, tmp_path: Path
) -> None:
    sessions = _sessions(sessions_for, settings)
    with transaction(sessions) as session:
        from_dir = register_release(session, settings, release_v2.folder)
        assert register_release(session, settings, release_v2.folder).id == from_dir.id  # idempotent
    with sessions() as session:
        release = session.get(Release, from_dir.id)
        assert release is not None
        stored = archive_path(settings, release)
        assert stored is not None and file_sha256(stored) == release.bundle_sha256
        assert (release.name, release.version, release.runtime) == ("trapline-nano", "2", "onnx")
        assert release.model_sha256 == release_v2.model_sha256 and release.key_id == kit.key_id
        assert release.bundle_url == f"/api/v1/releases/{release.id}/bundle"
        assert release.size_bytes == stored.stat().st_size
        assert session.scalar(select(ModelVersion.version).where(ModelVersion.id == release.model_id)) == "2"
    # an archive is kept byte for byte (its hash is what the release manager saw)
    older = kit.build("1.5")
    with transaction(sessions) as session:
        release = register_release(session, settings, older.archive)
        assert release.bundle_sha256 == older.sha256
    for bad, why in (
        (kit.tampered(release_v2).archive, "does not match its sha256"),
        (tmp_path / "missing.tar.gz", "No such file"),
    ):
        with transaction(sessions) as session, pytest.raises(ReleaseError, match=why):
            register_release(session, settings, bad)
    untrusting = settings.model_copy(update={"release_keyring": PACKAGED_MODEL.parent / "keyring"})
    with (
        transaction(sessions) as session,
        pytest.raises(ReleaseError, match="does not trust|any trusted key"),
    ):
        register_release(session, untrusting, kit.build("2.5").folder)


def test_rollback_grants_are_checked_against_the_release(
    settings: ServerSettings, sessions_for: Any, kit: ReleaseKit, release_v2: KitRelease
) -> None:
    sessions = _sessions(sessions_for, settings)
    older = kit.build("1.5")
    with transaction(sessions) as session:
        v2 = register_release(session, settings, release_v2.folder)
        v15 = register_release(session, settings, older.folder)
        with pytest.raises(ReleaseError, match="not for release"):
            add_rollback_grant(session, settings, v15.id, kit.grant(release_v2))  # another release's grant
        add_rollback_grant(session, settings, v15.id, kit.grant(older))
        assert v15.rollback_grant is not None and v2.rollback_grant is None


def test_bundles_download_in_ranges_for_traps_and_users(
    settings: ServerSettings, release_v2: KitRelease
) -> None:
    app = create_app(settings)
    seed(app)
    with transaction(app.state.sessions) as session:
        release_id = register_release(session, settings, release_v2.archive).id
    data = release_v2.archive.read_bytes()
    with TestClient(app) as client:
        url = f"/api/v1/releases/{release_id}/bundle"
        assert client.get(url).status_code == 401
        assert client.get(url, headers={"Authorization": "Bearer nonsense"}).status_code == 401
        trap = {"Authorization": f"Bearer {UPLOAD}"}
        whole = client.get(url, headers=trap)
        assert whole.status_code == 200 and whole.content == data
        assert whole.headers["accept-ranges"] == "bytes"
        rest = client.get(url, headers={**trap, "Range": "bytes=1000-"})
        assert rest.status_code == 206 and rest.content == data[1000:]
        assert rest.headers["content-range"] == f"bytes 1000-{len(data) - 1}/{len(data)}"
        assert client.get(url, headers={"Authorization": f"Bearer {VIEWER}"}).status_code == 200
        assert client.get("/api/v1/releases/999/bundle", headers=trap).status_code == 404
        listed = client.get("/api/v1/releases", headers={"Authorization": f"Bearer {VIEWER}"}).json()
        assert listed[0]["version"] == "2" and listed[0]["rollback_grant"] is False


def test_a_rollout_goes_to_the_canary_then_in_stages_and_halts_when_too_many_fail(
    database_url: str, tmp_path: Path, sessions_for: Any, kit: ReleaseKit, release_v2: KitRelease
) -> None:
    settings = settings_for(database_url, tmp_path, release_keyring=kit.keyring)
    sessions = _sessions(sessions_for, settings)
    devices = _devices(sessions, 10)
    with transaction(sessions) as session:
        release_id = register_release(session, settings, release_v2.folder).id
        set_group(session, "canary", ["trap-07"])
        plan = RolloutPlan(canary_group="canary", percentages=[30, 100], max_failure_percent=20)
        rollout_id = start(session, release_id, plan, "ada", NOW).id
    assert _targets(sessions) == {"trap-07": release_id}  # the canary alone
    assert _tick(sessions) == []
    _report(sessions, "trap-07", release_id, "downloading")
    assert _tick(sessions) == [] and set(_targets(sessions)) == {"trap-07"}
    _report(sessions, "trap-07", release_id, "installed")
    assert _tick(sessions) == [f"rollout {rollout_id} opened stage 1: 30% of the fleet"]
    stage1 = set(_targets(sessions))
    assert len(stage1) == 3 and "trap-07" in stage1
    for device_id in stage1 - {"trap-07"}:
        _report(sessions, device_id, release_id, "installed")
    assert _tick(sessions) == [f"rollout {rollout_id} opened stage 2: 100% of the fleet"]
    assert set(_targets(sessions)) == set(devices)
    later = [d for d in devices if d not in stage1]
    _report(sessions, later[0], release_id, "refused", "the bundle does not verify")
    _report(sessions, later[1], release_id, "rolled_back", "self-test failed")
    assert _tick(sessions) == []  # 2 of 10: not more than 20 %
    _report(sessions, later[2], release_id, "failed", "gave up after 8 attempts")
    events = _tick(sessions)
    assert events and events[0].startswith(
        f"rollout {rollout_id} halted: 3 of 10 traps failed, more than 20%"
    )
    with sessions() as session:
        rollout = session.get(Rollout, rollout_id)
        assert rollout is not None and rollout.state == "halted"
        assert "self-test failed" in (rollout.reason or "")
        history = session.scalars(
            select(DeviceModelStatus.stage).where(DeviceModelStatus.device_id == "trap-07")
        )
        assert list(history) == ["downloading", "installed"]
    with transaction(sessions) as session:
        with pytest.raises(RolloutError, match="halted, not running"):
            pause(session, rollout_id, NOW)
        resume(session, rollout_id, NOW)  # the operator knows of those three: only new failures count
    for device_id in later[3:]:
        _report(sessions, device_id, release_id, "installed")
    assert _tick(sessions) == []  # 7 of 10 installed: not the 100 % the last stage needs
    with transaction(sessions) as session:
        pause(session, rollout_id, NOW)
        assert session.get(Rollout, rollout_id).state == "paused"  # type: ignore[union-attr]
        resume(session, rollout_id, NOW)
        newer = register_release(session, settings, kit.build("3").folder).id
        replacing = start(session, newer, RolloutPlan(percentages=[100]), "ada", NOW)
        assert session.get(Rollout, rollout_id).state == "cancelled"  # type: ignore[union-attr]
        assert replacing.state == "running"
    assert set(_targets(sessions).values()) == {newer}


def test_rolling_back_needs_a_grant_for_the_older_release(
    settings: ServerSettings, sessions_for: Any, kit: ReleaseKit, release_v2: KitRelease
) -> None:
    sessions = _sessions(sessions_for, settings)
    _devices(sessions, 3)  # running the packaged model (v1)
    with transaction(sessions) as session:
        v1 = register_release(session, settings, PACKAGED_MODEL).id  # the model the fleet runs today
        v2 = register_release(session, settings, release_v2.folder).id
        rollout_id = start(session, v2, RolloutPlan(), "ada", NOW).id
    assert set(_targets(sessions).values()) == {v2}
    with transaction(sessions) as session:  # two traps switched to v2; trap-02 still runs v1
        for device_id in ("trap-00", "trap-01"):
            session.get(Device, device_id).model_sha256 = release_v2.model_sha256  # type: ignore[union-attr]
    with (
        transaction(sessions) as session,
        pytest.raises(RolloutError, match=f"release {v1} \\(v1\\): no rollback grant"),
    ):
        rollback(session, rollout_id, "ada", NOW)
    packaged = KitRelease("trapline-nano", "1", PACKAGED_MODEL, PACKAGED_MODEL, "", 0, PACKAGED_SHA, "")
    with transaction(sessions) as session:
        add_rollback_grant(session, settings, v1, kit.grant(packaged))
        result = rollback(session, rollout_id, "ada", NOW)
    assert result.going_back == {f"trap-{n:02d}": v1 for n in range(3)} and result.staying == []
    assert set(_targets(sessions).values()) == {v1}
    with sessions() as session:
        assert session.get(Rollout, rollout_id).state == "rolled_back"  # type: ignore[union-attr]
        assert all(not r.published for r in session.scalars(select(DeviceRelease)))


class _Subscriber:
    def __init__(self, port: int) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"sub-{time.monotonic_ns()}", protocol=mqtt.MQTTv5
        )
        self.client.on_message = lambda _c, _u, m: self.messages.append(
            (m.topic, bytes(m.payload), bool(m.retain))
        )
        self.client.connect("127.0.0.1", port)
        self.client.subscribe("trapline/+/cmd/model", qos=1)
        self.client.loop_start()

    def wait(self, count: int) -> list[tuple[str, bytes, bool]]:
        deadline = time.monotonic() + 10
        while len(self.messages) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        self.client.loop_stop()
        return self.messages


def test_desired_releases_are_retained_commands_on_the_broker(
    settings: ServerSettings, sessions_for: Any, release_v2: KitRelease, broker: MosquittoBroker
) -> None:
    settings = settings.model_copy(update={"mqtt_port": broker.port})
    sessions = _sessions(sessions_for, settings)
    _devices(sessions, 2)
    with transaction(sessions) as session:
        release_id = register_release(session, settings, release_v2.archive).id
        start(session, release_id, RolloutPlan(spread_s=600), "ada", NOW)
    sender = MqttCommandSender(settings)
    sender.start()
    try:
        assert publish_pending(sessions, sender, "trapline", NOW) == 2
        assert publish_pending(sessions, sender, "trapline", NOW) == 0  # nothing new
        late = _Subscriber(broker.port).wait(2)  # subscribes after the publish: retained
        with transaction(sessions) as session:
            row = session.get(DeviceRelease, "trap-01")
            assert row is not None
            row.desired_release_id, row.published = None, False  # cleared
        cleared = _Subscriber(broker.port)
        time.sleep(0.3)
        assert publish_pending(sessions, sender, "trapline", NOW) == 1
        after = cleared.wait(3)
    finally:
        sender.stop()
    commands = {t.split("/")[1]: ModelCommand.model_validate_json(p) for t, p, retained in late if retained}
    assert set(commands) == {"trap-00", "trap-01"}
    for device_id, command in commands.items():
        assert (command.release_id, command.version, command.sha256) == (release_id, "2", release_v2.sha256)
        assert command.url == f"/api/v1/releases/{release_id}/bundle"
        assert command.download_delay_s == download_delay_s(release_id, device_id, 600) <= 600
    assert commands["trap-00"].download_delay_s != commands["trap-01"].download_delay_s  # spread
    assert ("trapline/trap-01/cmd/model", b"", False) in after  # the clear reaches a listening trap


def test_rollout_api_and_page(settings: ServerSettings, kit: ReleaseKit, release_v2: KitRelease) -> None:
    app = create_app(settings)
    seed(app)
    with transaction(app.state.sessions) as session:
        release_id = register_release(session, settings, release_v2.folder).id
        session.get(Device, "trap-01").model_version = "1"  # type: ignore[union-attr]
    admin, viewer = {"Authorization": f"Bearer {ADMIN}"}, {"Authorization": f"Bearer {VIEWER}"}
    with TestClient(app) as client:
        body = {"release_id": release_id, "canary_group": "canary", "percentages": [50, 100]}
        assert (
            client.put("/api/v1/groups/canary", json={"devices": ["trap-02"]}, headers=viewer).status_code
            == 403
        )
        assert (
            client.put("/api/v1/groups/canary", json={"devices": ["nope"]}, headers=admin).status_code == 400
        )
        assert client.put("/api/v1/groups/canary", json={"devices": ["trap-02"]}, headers=admin).json() == [
            "trap-02"
        ]
        assert client.post("/api/v1/rollouts", json=body, headers=viewer).status_code == 403
        bad = client.post("/api/v1/rollouts", json={**body, "percentages": [100, 50]}, headers=admin)
        assert bad.status_code == 409 and "must grow" in bad.json()["detail"]
        created = client.post("/api/v1/rollouts", json=body, headers=admin)
        assert created.status_code == 201, created.text
        rollout = created.json()
        assert rollout["stages"] == ["group canary", "50% of the fleet", "100% of the fleet"]
        assert (rollout["state"], rollout["told"]) == ("running", 1)
        models = {d["device_id"]: d for d in client.get("/api/v1/fleet/models", headers=viewer).json()}
        assert models["trap-02"]["desired"]["version"] == "2" and models["trap-01"]["desired"] is None
        assert models["trap-01"]["current"]["version"] == "1"
        url = f"/api/v1/rollouts/{rollout['id']}"
        assert client.post(f"{url}/pause", headers=admin).json()["state"] == "paused"
        assert client.post(f"{url}/pause", headers=admin).status_code == 409
        assert client.post(f"{url}/resume", headers=admin).json()["state"] == "running"
        back = client.post(f"{url}/rollback", headers=admin).json()
        assert back["rollout"]["state"] == "rolled_back" and back["staying"] == ["trap-02"]
        assert client.get("/rollouts", follow_redirects=False).status_code == 303
        assert client.post("/api/v1/session", data={"token": ADMIN}).status_code == 200  # logs in
        page = client.get("/rollouts").text
    assert 'data-rollout="1" data-state="rolled_back"' in page
    assert "trapline-nano v2 (release 1)" in page  # trap-02's desired release


def test_the_rollouts_page_pauses_in_a_browser(
    settings: ServerSettings, release_v2: KitRelease, tmp_path: Path
) -> None:
    from tests.server.test_dashboard import CHROMIUM, LAUNCH_ARGS

    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed")
    from playwright.sync_api import sync_playwright

    app = create_app(settings)
    seed(app)
    with transaction(app.state.sessions) as session:
        release_id = register_release(session, settings, release_v2.folder).id
        start(session, release_id, RolloutPlan(), "ada", NOW)
    with serving(app) as url, sync_playwright() as playwright:  # serving waits until it listens
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        context = browser.new_context(base_url=url)
        assert context.request.post("/api/v1/session", form={"token": ADMIN}).ok  # logs in
        page = context.new_page()
        page.goto("/rollouts")
        page.click('button[data-action="pause"]')
        page.wait_for_selector('tr[data-state="paused"]')
        assert page.query_selector('button[data-action="resume"]') is not None
        page.screenshot(path=str(tmp_path / "rollouts.png"), full_page=True)
        browser.close()
