"""The device registry: enrolment tokens (once, expiring), credentials a real broker accepts,
reloaded without dropping connected traps; deployments; decommissioning."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from fastapi.testclient import TestClient
from paho.mqtt.enums import CallbackAPIVersion

from tests.conftest import SAMPLES, MqttCollector
from tests.server.conftest import ADMIN, detection_payload, seed, settings_for
from trapline.cli.broker import MosquittoBroker
from trapline.cli.main import main
from trapline.enrolment import ENROL_PATH, EnrolmentResponse
from trapline.keyring import Keyring
from trapline.server.api.main import create_app
from trapline.server.db import transaction
from trapline.server.models import DeviceEnrolment

AUTH = {"Authorization": f"Bearer {ADMIN}"}


def _register(client: TestClient, *ids: str, site: str | None = None) -> dict[str, str]:
    answer = client.post("/api/v1/devices", json={"ids": list(ids), "site": site}, headers=AUTH)
    assert answer.status_code == 201, answer.text
    return {row["device_id"]: row["enrolment_token"] for row in answer.json()}


def _enrol(client: TestClient, device: str, token: str, **extra: object) -> Any:
    return client.post(ENROL_PATH, json={"token": token, "device_id": device, "agent_version": "t", **extra})


@pytest.fixture
def fleet_client(sqlite_url: str, tmp_path: Path) -> TestClient:
    app = create_app(settings_for(sqlite_url, tmp_path, mosquitto_auth_dir=tmp_path / "auth"))
    seed(app)
    return TestClient(app, base_url="https://testserver")  # traps' upload tokens: https only


def test_a_token_enrols_once_and_only_its_device(fleet_client: TestClient, tmp_path: Path) -> None:
    client = fleet_client
    assert (
        client.put("/api/v1/sites", json={"id": "ridge", "blur_people": True}, headers=AUTH).status_code
        == 200
    )
    tokens = _register(client, "trap-a", "trap-b", site="ridge")
    assert _enrol(client, "trap-b", tokens["trap-a"]).status_code == 403  # another device's token
    first = _enrol(client, "trap-a", tokens["trap-a"])
    assert first.status_code == 200, first.text
    answer = EnrolmentResponse.model_validate_json(first.content)
    assert answer.mqtt.username == "trap-a" and answer.site is not None and answer.site.blur_people
    settings = client.app.state.settings  # type: ignore[attr-defined]
    assert set(answer.keyring) == set(Keyring.load(settings.release_keyring).keys)
    assert _enrol(client, "trap-a", tokens["trap-a"]).status_code == 403  # used
    # the upload token works, the broker's password file has the trap (hashed, never in clear)
    passwd = (tmp_path / "auth" / "passwd").read_text()
    assert "trap-a:$7$" in passwd and answer.mqtt.password.get_secret_value() not in passwd
    assert (tmp_path / "auth" / "passwd").stat().st_mode & 0o777 == 0o640
    media = client.post(
        "/api/v1/media",
        files={"file": ("x.jpg", (SAMPLES / "cougar-39858-0.jpg").read_bytes(), "image/jpeg")},
        data={"kind": "frame"},
        headers={"Authorization": f"Bearer {answer.upload.token.get_secret_value()}"},
    )
    assert media.status_code == 200, media.text


def test_an_expired_token_is_refused(fleet_client: TestClient) -> None:
    token = _register(fleet_client, "trap-c")["trap-c"]
    with transaction(fleet_client.app.state.sessions) as session:  # type: ignore[attr-defined]
        row = session.get_one(DeviceEnrolment, "trap-c")
        row.token_expires_at = datetime.now(UTC) - timedelta(seconds=1)
    assert _enrol(fleet_client, "trap-c", token).status_code == 403
    # a fresh token from the admin works
    fresh = fleet_client.post("/api/v1/devices/trap-c/enrolment-token", headers=AUTH).json()
    assert _enrol(fleet_client, "trap-c", fresh["enrolment_token"]).status_code == 200


def test_registering_needs_an_admin_and_valid_ids(fleet_client: TestClient) -> None:
    assert fleet_client.post("/api/v1/devices", json={"ids": ["trap-x"]}).status_code == 401
    bad = fleet_client.post("/api/v1/devices", json={"ids": ["bad/id"]}, headers=AUTH)
    assert bad.status_code == 422
    unknown_site = fleet_client.post("/api/v1/devices", json={"ids": ["t1"], "site": "nowhere"}, headers=AUTH)
    assert unknown_site.status_code == 404


def test_deployment_periods_and_decommissioning(fleet_client: TestClient) -> None:
    client = fleet_client
    client.put("/api/v1/sites", json={"id": "ridge"}, headers=AUTH)
    answer = EnrolmentResponse.model_validate_json(
        _enrol(client, "trap-d", _register(client, "trap-d")["trap-d"]).content
    )
    device_auth = {"Authorization": f"Bearer {answer.upload.token.get_secret_value()}"}
    photo = (SAMPLES / "coyote-51472-810-empty.jpg").read_bytes()
    import hashlib

    def report(start: str, with_photo: bool) -> Any:
        body = {
            "schema": "trapline.deployment/1", "device_id": "trap-d", "site": "ridge", "latitude": -41.3,
            "longitude": 174.8, "camera_height_m": 0.8, "camera_heading_deg": 135.0, "started_at": start,
            "reference_photo_sha256": hashlib.sha256(photo).hexdigest(),
        }  # fmt: skip
        files = {"photo": ("reference.jpg", photo, "image/jpeg")} if with_photo else None
        return client.post(
            "/api/v1/deployments/report",
            data={"deployment": json.dumps(body)},
            files=files,
            headers=device_auth,
        )

    first = report("2026-11-01T08:00:00+00:00", True)
    assert first.status_code == 200, first.text
    assert report("2026-11-01T08:00:00+00:00", True).json()["id"] == first.json()["id"]  # idempotent
    moved = report("2026-11-20T08:00:00+00:00", False)
    rows = client.get("/api/v1/deployments", headers=AUTH).json()
    mine = [r for r in rows if r["device_id"] == "trap-d"]
    assert [r["end"] for r in mine] == ["2026-11-20T08:00:00Z", None]  # the first period ended at the move
    assert (
        client.get(f"/api/v1/deployments/{first.json()['id']}/reference-photo", headers=AUTH).content == photo
    )
    gone = client.post("/api/v1/devices/trap-d/decommission", headers=AUTH)
    assert gone.status_code == 200
    ended = [
        r for r in client.get("/api/v1/deployments", headers=AUTH).json() if r["id"] == moved.json()["id"]
    ]
    assert ended[0]["end"] is not None
    assert report("2026-11-25T08:00:00+00:00", False).status_code == 401  # its token is revoked


def _connect(port: int, user: str, password: str, events: list[str]) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"c-{user}", protocol=mqtt.MQTTv5)
    client.username_pw_set(user, password)
    client.on_connect = lambda _c, _u, _f, reason, _p: events.append(f"connect {reason.value}")
    client.on_disconnect = lambda _c, _u, _f, reason, _p: events.append(f"disconnect {reason.value}")
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


def test_enrolment_reloads_the_broker_without_dropping_connected_traps(
    sqlite_url: str, tmp_path: Path
) -> None:
    auth = tmp_path / "auth"
    broker = MosquittoBroker(tmp_path / "broker", extra_config=(
        f"allow_anonymous false\npassword_file {auth / 'passwd'}\nacl_file {auth / 'acl'}\n"
        f"pid_file {tmp_path / 'mosquitto.pid'}\n"
    ))  # fmt: skip
    settings = settings_for(
        sqlite_url, tmp_path, broker, mosquitto_auth_dir=auth, mosquitto_pid_file=tmp_path / "mosquitto.pid",
        mqtt_username="ingest", mqtt_password="ingest-password-0123",
    )  # fmt: skip
    app = create_app(settings)
    seed(app)
    client = TestClient(app, base_url="https://testserver")
    first = EnrolmentResponse.model_validate_json(
        _enrol(client, "trap-e", _register(client, "trap-e")["trap-e"]).content
    )
    with broker:
        server = MqttCollector(broker.port, client_id="ingest-sub")
        server.client.username_pw_set("ingest", "ingest-password-0123")
        server.client.reconnect()
        assert server.wait_for(lambda: server.client.is_connected(), 10)
        events: list[str] = []
        trap = _connect(broker.port, "trap-e", first.mqtt.password.get_secret_value(), events)
        assert server.wait_for(lambda: events == ["connect 0"], 10), events
        stop = threading.Event()

        def keep_publishing() -> None:
            number = 0
            while not stop.is_set():
                trap.publish("trapline/trap-e/detections", detection_payload("trap-e", number), qos=1)
                number += 1
                stop.wait(0.05)

        publisher = threading.Thread(target=keep_publishing)
        publisher.start()
        # a second trap enrols while the first publishes: the server rewrites passwd and SIGHUPs
        second = EnrolmentResponse.model_validate_json(
            _enrol(client, "trap-f", _register(client, "trap-f")["trap-f"]).content
        )
        others: list[str] = []
        newcomer = _connect(broker.port, "trap-f", second.mqtt.password.get_secret_value(), others)
        assert server.wait_for(lambda: others == ["connect 0"], 10), others  # reloaded: it is known now
        before = len(server.payloads("/detections"))
        assert server.wait_for(lambda: len(server.payloads("/detections")) > before + 10, 10)
        stop.set()
        publisher.join()
        assert events == ["connect 0"]  # the first trap was never dropped
        # decommissioned: the broker no longer lets it in
        client.post("/api/v1/devices/trap-f/decommission", headers=AUTH)
        newcomer.loop_stop()
        newcomer.disconnect()
        refused: list[str] = []
        intruder = _connect(broker.port, "trap-f", second.mqtt.password.get_secret_value(), refused)
        assert server.wait_for(lambda: bool(refused), 10)
        assert refused[0] in ("connect 134", "connect 135")  # bad user name or password / not authorised
        for done in (intruder, trap):
            done.loop_stop()
        server.close()
    app.state.engine.dispose()


def test_cli_registers_a_batch(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TRAPLINE_SERVER_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("TRAPLINE_SERVER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("TRAPLINE_SERVER_PUBLIC_URL", raising=False)

    def run(*args: str) -> tuple[int, str]:
        """Exit status, and what it printed (errors go to stderr)."""
        code = main(["server", *args])
        printed = capsys.readouterr()
        return code, printed.out + printed.err

    assert run("site", "add", "ridge", "--blur-people")[0] == 0
    code, out = run("device", "add", "trap-", "--count", "3", "--site", "ridge")
    assert code == 0, out
    lines = out.splitlines()
    assert [line.split()[0] for line in lines] == ["trap-001", "trap-002", "trap-003"]
    assert all("enrolment token" in line for line in lines)
    code, out = run("device", "enrol-offline", "trap-002", "--out", str(tmp_path / "trap-002.enrol"))
    assert code == 2 and "PUBLIC_URL" in out  # needs the address traps use
    monkeypatch.setenv("TRAPLINE_SERVER_PUBLIC_URL", "https://fleet.example.org")
    code, out = run("device", "enrol-offline", "trap-002", "--out", str(tmp_path / "trap-002.enrol"))
    assert code == 0, out
    answer = EnrolmentResponse.model_validate_json((tmp_path / "trap-002.enrol").read_bytes())
    assert (
        answer.upload.url == "https://fleet.example.org"
        and answer.site is not None
        and answer.site.blur_people
    )
    assert (tmp_path / "trap-002.enrol").stat().st_mode & 0o777 == 0o600
    code, out = run("device", "decommission", "trap-002")
    assert code == 0 and "credentials revoked" in out


def test_the_fleet_shows_a_trap_whose_view_moved(fleet_client: TestClient) -> None:
    from tests.server.conftest import accepted
    from trapline.server.ingest.store import store_batch

    beat = {"schema": "trapline.heartbeat/1", "ts": datetime.now(UTC).isoformat(), "uptime_s": 5.0,
            "frames_processed": 1, "frames_quarantined": 0, "spool_depth": 0, "spool_bytes": 0, "dropped": 0,
            "view": {"state": "blocked", "features_in_place": 0.0, "detail": 0.05,
                     "checked_at": datetime.now(UTC).isoformat()}}  # fmt: skip
    with transaction(fleet_client.app.state.sessions) as session:  # type: ignore[attr-defined]
        store_batch(session, [accepted("trapline/trap-01/heartbeat", json.dumps(beat).encode())], [])
    device = fleet_client.get("/api/v1/devices/trap-01", headers=AUTH).json()
    assert device["view_state"] == "blocked"
