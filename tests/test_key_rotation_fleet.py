"""Key rotation end to end: the release manager signs statements, the server registers them and
publishes them retained on the trap's `cmd/keys` through a real Mosquitto with the generated
passwords and ACL; a real agent applies them, reports on `ota`, and from then on installs a bundle
signed by the new key and refuses one signed only by the retired key."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from tests.conftest import SAMPLES, MqttCollector, agent_config, start_agent, write_config
from tests.server.conftest import accepted, register
from tests.support.fleet import reap, track
from tests.support.ota import BundleFileServer, Release, ReleaseKit
from trapline.bundle import sign_bundle
from trapline.cli.broker import MosquittoBroker
from trapline.contracts import KeysCommand, topic
from trapline.key_rotation import sign_rotation
from trapline.keyring import Keyring, generate_keys, read_public_key
from trapline.manifest import ModelManifest
from trapline.server.core.config import ServerSettings
from trapline.server.db import make_engine, session_factory, transaction
from trapline.server.ingest.store import store_batch
from trapline.server.migrate import upgrade
from trapline.server.models import DeviceKeyring
from trapline.server.ota.commands import MqttCommandSender
from trapline.server.ota.controller import RolloutController
from trapline.server.ota.key_rotations import register_rotation
from trapline.server.security import write_mosquitto_auth

DEVICE = "trap-07"
PASSWORDS = {DEVICE: "trap-password", "server": "server-password"}


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[MosquittoBroker]:
    """Mosquitto with the server's generated password file and ACL (server/security.py)."""
    passwd, acl = write_mosquitto_auth(
        tmp_path / "auth", "trapline", {DEVICE: PASSWORDS[DEVICE]}, {"server": PASSWORDS["server"]}
    )
    config = f"allow_anonymous false\npassword_file {passwd}\nacl_file {acl}\n"
    with MosquittoBroker(tmp_path / "broker", extra_config=config) as broker:
        yield broker
    reap()


def _signed_by(release: Release, private_key: Path, kit: ReleaseKit, folder: Path) -> Release:
    """`release`'s bundle signed by another key, as the release manager signs after a rotation."""
    copy = folder / f"{release.folder.name}-{private_key.stem}"
    shutil.copytree(release.folder, copy)
    sign_bundle(copy, ModelManifest.read(copy / "manifest.json"), private_key)
    return kit.pack(copy)


def _now() -> datetime:
    return datetime.now(UTC)


def _raw_ota(collector: MqttCollector) -> list[tuple[str, dict[str, Any]]]:
    """The trap's `ota` reports with their topics, as ingest receives them."""
    return [(name, payload) for name, payload, _ in list(collector.messages) if name.endswith("/ota")]


def _ota(collector: MqttCollector) -> list[dict[str, Any]]:
    return collector.payloads("/ota")


def _stages(collector: MqttCollector, release_id: int) -> list[str]:
    return [p["stage"] for p in _ota(collector) if p.get("release_id") == release_id]


def _key_reports(collector: MqttCollector, stage: str) -> list[dict[str, Any]]:
    return [p for p in _ota(collector) if p["stage"] == stage]


def _running(collector: MqttCollector) -> set[str]:
    """The model hashes of the last few frames."""
    return {p["model"]["sha256"] for p in collector.payloads("/detections")[-3:] if p.get("model")}


def test_a_trap_follows_a_rotation_and_trusts_only_the_new_key(
    tmp_path: Path, secured: MosquittoBroker, kit: ReleaseKit, release_v2: Release
) -> None:
    # the fleet trusts what the kit's keyring holds (the packaged key and the kit's release key)
    url = f"sqlite:///{tmp_path / 'server.sqlite'}"
    upgrade(url)
    settings = ServerSettings(
        database_url=url,
        data_dir=tmp_path / "data",
        mqtt_host="127.0.0.1",
        mqtt_port=secured.port,
        mqtt_username="server",
        mqtt_password=PASSWORDS["server"],
        release_keyring=kit.keyring,
    )
    engine = make_engine(url)
    sessions = session_factory(engine)
    register(sessions, DEVICE)
    keys = tmp_path / "keys"
    new_id = generate_keys(keys / "new.key", keys / "new.pub")
    new_public = read_public_key((keys / "new.pub").read_bytes(), "new")
    retired = kit.key_id
    by_new = _signed_by(release_v2, keys / "new.key", kit, tmp_path)
    served = tmp_path / "served"
    served.mkdir()
    shutil.copyfile(release_v2.archive, served / "by-retired.tar.gz")
    shutil.copyfile(by_new.archive, served / "by-new.tar.gz")

    collector = MqttCollector(secured.port, client_id="key-rotation-observer")
    collector.client.username_pw_set("server", PASSWORDS["server"])
    collector.client.reconnect()
    sender = MqttCommandSender(settings)
    sender.start()
    log = tmp_path / "agent.log"
    try:
        assert collector.wait_for(lambda: collector.client.is_connected(), 10)
        with BundleFileServer(served) as files:
            (tmp_path / "mqtt-password").write_text(PASSWORDS[DEVICE])
            (tmp_path / "mqtt-password").chmod(0o600)
            source = {"type": "replay", "files": [str(SAMPLES)], "count": 100_000, "interval_s": 0.2}
            config = agent_config(
                tmp_path, secured.port, source, device_id=DEVICE,
                mqtt={"host": "127.0.0.1", "port": secured.port, "username": DEVICE,
                      "password_file": str(tmp_path / "mqtt-password"), "backoff_min_s": 1, "backoff_max_s": 2},
                model={"keyring": str(kit.keyring)},
                ota={"server_url": f"http://127.0.0.1:{files.port}", "health_window_s": 1.0,
                     "retry_min_s": 0.5, "window": {"min_disk_free_mb": 0}},
            )  # fmt: skip
            agent = track(start_agent(write_config(tmp_path, config), log))
            started = lambda: len(collector.payloads("/detections")) >= 2  # noqa: E731
            assert collector.wait_for(started, 60), log.read_text()[-3000:]

            # 1. two statements: the current key adds the new one, the new one retires the old
            with transaction(sessions) as session:
                register_rotation(
                    session, settings, sign_rotation(kit.private_key, 1, add=[new_public]), None, _now()
                )
                register_rotation(
                    session, settings, sign_rotation(keys / "new.key", 2, revoke=[retired]), None, _now()
                )
            published = time.monotonic()
            RolloutController(settings, sessions, sender).tick()  # what `trapline server ota` does
            applied = lambda: _key_reports(collector, "keys_applied")  # noqa: E731
            assert collector.wait_for(lambda: bool(applied()), 30), log.read_text()[-3000:]
            rotation_s = time.monotonic() - published
            report = applied()[-1]
            trusted = sorted({*Keyring.load(kit.keyring).keys, new_id} - {retired})
            assert (report["key_sequence"], report["trusted_keys"]) == (2, trusted)
            # the server records it from the trap's own report (what ingest stores)
            with transaction(sessions) as session:
                store_batch(
                    session, [accepted(t, json.dumps(p).encode()) for t, p in _raw_ota(collector)], []
                )
            with sessions() as session:
                row = session.scalars(select(DeviceKeyring)).one()
                assert (row.device_id, row.desired_sequence, row.published) == (DEVICE, 2, True)
                assert (row.applied_sequence, row.trusted_keys, row.refused_at) == (2, trusted, None)

            # 2. a bundle signed only by the retired key is refused, even when its command names
            #    the new key: the signature itself does not verify any more
            lying = release_v2.command("/by-retired.tar.gz", release_id=2, key_id=new_id)
            assert sender.send(topic("trapline", DEVICE, "cmd/model"), lying.to_json())
            assert collector.wait_for(lambda: "refused" in _stages(collector, 2), 60), log.read_text()[-3000:]
            refusal = next(p for p in _ota(collector) if p.get("release_id") == 2 and p["stage"] == "refused")
            assert "does not verify" in refusal["reason"], refusal

            # 3. the same model signed by the new key is installed and runs
            command = by_new.command("/by-new.tar.gz", release_id=3)
            assert sender.send(topic("trapline", DEVICE, "cmd/model"), command.to_json())
            installed = lambda: "installed" in _stages(collector, 3)  # noqa: E731
            assert collector.wait_for(installed, 60), log.read_text()[-3000:]
            assert collector.wait_for(lambda: _running(collector) == {by_new.model_sha256}, 20)

            # 4. a forged statement (a key the trap does not trust) is refused and reported
            stranger = generate_keys(keys / "stranger.key", keys / "stranger.pub")
            forged = sign_rotation(
                keys / "stranger.key", 3, add=[read_public_key((keys / "stranger.pub").read_bytes(), "s")]
            )
            payload = KeysCommand(statements=[forged]).to_json()
            assert sender.send(topic("trapline", DEVICE, "cmd/keys"), payload)
            refused = lambda: _key_reports(collector, "keys_refused")  # noqa: E731
            assert collector.wait_for(lambda: bool(refused()), 30), log.read_text()[-3000:]
            assert refused()[-1]["key_sequence"] == 3 and stranger in refused()[-1]["reason"]
            assert agent.poll() is None, log.read_text()[-3000:]
            print(f"\nkey rotation: published to keys_applied reported {rotation_s:.2f} s (2 statements)")
            agent.send_signal(signal.SIGTERM)
            try:
                assert agent.wait(30) == 0, log.read_text()[-3000:]
            except subprocess.TimeoutExpired:
                pytest.fail(f"agent did not stop:\n{log.read_text()[-3000:]}")
    finally:
        sender.stop()
        collector.close()
        engine.dispose()
