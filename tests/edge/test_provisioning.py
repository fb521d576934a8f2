"""`trapline provision` into --root, twice, against the real server on loopback: the expected
files, owners and modes; the second run changes nothing; --dry-run writes nothing; an offline
enrolment file works without the server; the deployment and its reference photo reach the server."""

from __future__ import annotations

import hashlib
import os
import pwd
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

pytest.importorskip("fastapi", reason="needs the server, which is not part of a trap's install (arm64 check)")

from tests.conftest import SAMPLES  # noqa: E402
from tests.support.live_server import live_server  # noqa: E402
from trapline.cli.main import main  # noqa: E402
from trapline.enrolment import EnrolmentResponse  # noqa: E402
from trapline.server.core.config import ServerSettings  # noqa: E402
from trapline.server.db import make_engine, session_factory, transaction  # noqa: E402
from trapline.server.fleet import add_site, issue_enrolment_token  # noqa: E402
from trapline.server.migrate import upgrade  # noqa: E402
from trapline.server.models import Deployment  # noqa: E402

# an existing user other than root: owners are checked when the tests run as root
AGENT_USER = "daemon"
REFERENCE = SAMPLES / "coyote-51472-810-empty.jpg"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, ServerSettings]]:
    url = f"sqlite:///{tmp_path / 'server.sqlite'}"
    upgrade(url)
    settings = ServerSettings(
        database_url=url, data_dir=tmp_path / "data", mqtt_host="broker.example.org", mqtt_port=8883,
        trap_mqtt_tls=True, mosquitto_auth_dir=tmp_path / "mosquitto",
    )  # fmt: skip
    with live_server(settings) as base_url:
        yield base_url, settings


def _token(settings: ServerSettings, device: str, site: str = "ridge", blur: bool = False) -> str:
    engine = make_engine(settings.database_url)
    with transaction(session_factory(engine)) as session:
        add_site(session, site, "Ridge north", blur)
        token = issue_enrolment_token(session, settings, device, site).token
    engine.dispose()
    return token


def _provision(capsys: pytest.CaptureFixture[str], root: Path, *args: str) -> tuple[int, str]:
    code = main([
        "provision", "--device", "trap-07", "--root", str(root), "--user", AGENT_USER,
        "--camera", "folder:/var/lib/trapline/dcim", "--lat", "-41.29", "--lon", "174.78",
        "--height", "0.8", "--heading", "135", "--reference-photo", str(REFERENCE), *args,
    ])  # fmt: skip
    return code, capsys.readouterr().out


def _tree(root: Path) -> dict[str, tuple[int, int, int, bytes | str]]:
    found = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        body: bytes | str = (
            os.readlink(path) if path.is_symlink() else path.read_bytes() if path.is_file() else b""
        )
        found[str(path.relative_to(root))] = (stat.S_IMODE(info.st_mode), info.st_uid, info.st_mtime_ns, body)
    return found


def test_provision_twice_into_a_root(
    tmp_path: Path, server: tuple[str, ServerSettings], capsys: pytest.CaptureFixture[str]
) -> None:
    base_url, settings = server
    token = _token(settings, "trap-07")
    root = tmp_path / "pi"
    started = time.monotonic()
    code, out = _provision(capsys, root, "--server", base_url, "--token", token, "--site", "ridge")
    first_run_s = time.monotonic() - started
    assert code == 0, out
    assert "found    animal" in out or "found    nothing" in out  # `edge check` ran on the result
    assert "deployment: recorded on the server" in out
    etc = root / "etc" / "trapline"
    modes = {
        name: stat.S_IMODE((etc / name).stat().st_mode)
        for name in ("agent.yaml", "mqtt-password", "upload-token")
    }
    assert modes == {"agent.yaml": 0o640, "mqtt-password": 0o600, "upload-token": 0o600}
    if os.geteuid() == 0:  # the agent's user owns its secrets and state; root owns the config
        uid = pwd.getpwnam(AGENT_USER).pw_uid
        assert (etc / "mqtt-password").stat().st_uid == uid
        assert (root / "var" / "lib" / "trapline").stat().st_uid == uid
        assert (etc / "agent.yaml").stat().st_uid == 0
    config = yaml.safe_load((etc / "agent.yaml").read_text())
    assert config["mqtt"]["host"] == "broker.example.org" and config["mqtt"]["tls"]
    assert (
        "password" not in config["mqtt"] and config["mqtt"]["password_file"] == "/etc/trapline/mqtt-password"
    )
    secret = (etc / "mqtt-password").read_text()
    assert (
        len(secret) > 20
        and secret not in (etc / "agent.yaml").read_text() + (etc / "enrolment.json").read_text()
    )
    assert [p.name for p in (etc / "keyring").iterdir()] == ["6825e79719a3e851.pub"]
    unit = root / "etc/systemd/system/trapline-edge.service"
    assert f"User={AGENT_USER}" in unit.read_text()
    assert (
        os.readlink(root / "etc/systemd/system/multi-user.target.wants/trapline-edge.service")
        == "/etc/systemd/system/trapline-edge.service"
    )
    # the server has the deployment and its photo
    engine = make_engine(settings.database_url)
    with session_factory(engine)() as session:
        (row,) = session.query(Deployment).all()
        assert (row.latitude, row.camera_heading_deg, row.site_id) == (-41.29, 135.0, "ridge")
        assert row.reference_photo_sha256 == hashlib.sha256(REFERENCE.read_bytes()).hexdigest()
    engine.dispose()

    before = _tree(root)
    started = time.monotonic()
    code, out = _provision(capsys, root, "--server", base_url, "--token", token, "--site", "ridge")
    second_run_s = time.monotonic() - started
    assert code == 0, out
    assert "already enrolled" in out and "nothing changed" in out and "already recorded" in out
    assert _tree(root) == before  # not one byte, mode, owner or mtime
    print(f"provisioning run time: first {first_run_s:.1f} s, second {second_run_s:.1f} s")


def test_dry_run_prints_every_file_and_writes_nothing(
    tmp_path: Path, server: tuple[str, ServerSettings], capsys: pytest.CaptureFixture[str]
) -> None:
    _, settings = server
    offline = tmp_path / "trap-07.enrol"
    assert main(["provision", "--device", "trap-07", "--dry-run", "--root", str(tmp_path / "pi")]) == 2
    assert "cannot enrol" in capsys.readouterr().out  # a token works once: never spent on a dry run
    # an offline enrolment file, as `trapline server device enrol-offline` writes it
    answer = _offline_answer(settings, "trap-07")
    offline.write_bytes(answer)
    code, out = _provision(capsys, tmp_path / "pi", "--offline", str(offline), "--dry-run")
    assert code == 0, out
    for path in ("/etc/trapline/agent.yaml", "/etc/trapline/mqtt-password", "/etc/trapline/upload-token",
                 "/etc/trapline/keyring/6825e79719a3e851.pub", "/var/lib/trapline/deployment.json",
                 "/var/lib/trapline/reference.jpg", "/etc/systemd/system/trapline-edge.service"):  # fmt: skip
        assert f" {path} " in out or f" {path}\n" in out, path
    assert EnrolmentResponse.model_validate_json(answer).mqtt.password.get_secret_value() not in out
    assert not (tmp_path / "pi").exists()


def _offline_answer(settings: ServerSettings, device: str) -> bytes:
    from trapline.enrolment import EnrolmentRequest
    from trapline.server.fleet import enrol

    engine = make_engine(settings.database_url)
    with transaction(session_factory(engine)) as session:
        token = _token_in(session, settings, device)
        request = EnrolmentRequest(token=token, device_id=device, agent_version="t")  # type: ignore[arg-type]
        answer = enrol(session, settings, request, "http://127.0.0.1:9").to_json()
    engine.dispose()
    return answer


def _token_in(session: object, settings: ServerSettings, device: str) -> str:
    add_site(session, "ridge", None, True)  # type: ignore[arg-type]
    return issue_enrolment_token(session, settings, device, "ridge").token  # type: ignore[arg-type]


def test_offline_provisioning_at_a_site_without_network(
    tmp_path: Path, server: tuple[str, ServerSettings], capsys: pytest.CaptureFixture[str]
) -> None:
    _, settings = server
    offline = tmp_path / "trap-07.enrol"
    offline.write_bytes(_offline_answer(settings, "trap-07"))  # its upload URL answers nothing
    code, out = _provision(capsys, tmp_path / "pi", "--offline", str(offline))
    assert code == 0, out
    assert "the agent sends it when the trap is online" in out
    config = yaml.safe_load((tmp_path / "pi/etc/trapline/agent.yaml").read_text())
    assert config["privacy"] == {"blur_people": True}  # the site's rule reached the trap
    assert config["deployment_file"] == "/var/lib/trapline/deployment.json"
    wrong = _provision(capsys, tmp_path / "other", "--offline", str(offline), "--device", "trap-08")
    assert wrong[0] == 2 and "is for device trap-07" in wrong[1]
