"""Key rotation on the server: a statement is judged like a trap judges it before it is kept,
published as each trap's retained cmd/keys (the newest statements, in order), and the traps'
reports say which applied it; releases are checked against the rotated keyring from then on."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tests.server.conftest import accepted, register, settings_for
from tests.support.ota import Release as KitRelease
from tests.support.ota import ReleaseKit
from trapline.bundle import sign_bundle
from trapline.contracts import KeyRotationStatement, KeysCommand, utc_now
from trapline.key_rotation import sign_rotation
from trapline.keyring import generate_keys, install_public_key, read_public_key
from trapline.manifest import ModelManifest
from trapline.server.core.config import ServerSettings
from trapline.server.db import transaction
from trapline.server.ingest.store import store_batch
from trapline.server.models import DeviceKeyring, DeviceModelStatus
from trapline.server.ota.key_rotations import (
    KeyRotationError,
    fleet_keyring,
    publish_pending_keys,
    register_rotation,
)
from trapline.server.ota.releases import ReleaseError, register_release

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


class RecordingSender:
    """The command publisher's interface, keeping what it was given (a real broker: tests/edge)."""

    def __init__(self) -> None:
        self.sent: dict[str, bytes] = {}

    def send(self, topic: str, payload: bytes) -> bool:
        self.sent[topic] = payload
        return True


class Keys:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.ids = {
            name: generate_keys(folder / f"{name}.key", folder / f"{name}.pub")
            for name in ("old", "new", "stranger")
        }

    def private(self, name: str) -> Path:
        return self.folder / f"{name}.key"

    def public(self, name: str) -> Any:
        return read_public_key((self.folder / f"{name}.pub").read_bytes(), name)


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    return Keys(tmp_path / "keys")


@pytest.fixture
def setup(
    database_url: str, tmp_path: Path, keys: Keys, sessions_for: Callable[[str], sessionmaker[Session]]
) -> tuple[ServerSettings, sessionmaker[Session]]:
    ring = tmp_path / "release-keyring"
    install_public_key(ring, (keys.folder / "old.pub").read_bytes())
    settings = settings_for(database_url, tmp_path, release_keyring=ring)
    sessions = sessions_for(database_url)
    register(sessions, "trap-01", "trap-02", "trap-03")
    return settings, sessions


def _register(
    setup: tuple[ServerSettings, sessionmaker[Session]],
    statement: KeyRotationStatement,
    devices: list[str] | None = None,
) -> list[str]:
    settings, sessions = setup
    with transaction(sessions) as session:
        return register_rotation(session, settings, statement, devices, NOW)


def test_a_statement_is_judged_like_a_trap_judges_it(
    setup: tuple[ServerSettings, sessionmaker[Session]], keys: Keys
) -> None:
    settings, sessions = setup
    forged = sign_rotation(keys.private("stranger"), 1, add=[keys.public("stranger")])
    with pytest.raises(KeyRotationError, match="traps would refuse it: .* not trusted"):
        _register(setup, forged)
    add_new = sign_rotation(keys.private("old"), 1, add=[keys.public("new")])
    assert _register(setup, add_new, ["trap-01"]) == ["trap-01"]
    assert _register(setup, add_new) == ["trap-01", "trap-02", "trap-03"]  # the same again: more traps
    reused = sign_rotation(keys.private("old"), 1, add=[keys.public("stranger")])
    with pytest.raises(KeyRotationError, match="used once .* --sequence 2"):
        _register(setup, reused)
    revoke_old = sign_rotation(keys.private("new"), 3, revoke=[keys.ids["old"]])
    _register(setup, revoke_old)
    stale = sign_rotation(keys.private("new"), 2, add=[keys.public("stranger")])
    with pytest.raises(KeyRotationError, match="older than the latest registered .*--sequence 4"):
        _register(setup, stale)
    by_revoked = sign_rotation(keys.private("old"), 4, add=[keys.public("stranger")])
    with pytest.raises(KeyRotationError, match="not trusted"):
        _register(setup, by_revoked)
    with pytest.raises(KeyRotationError, match="unknown traps: trap-99"):
        _register(setup, revoke_old, ["trap-99"])
    with sessions() as session:
        assert set(fleet_keyring(session, settings).keys) == {keys.ids["new"]}


def test_each_trap_gets_the_newest_statements_in_order_once(
    setup: tuple[ServerSettings, sessionmaker[Session]], keys: Keys
) -> None:
    _, sessions = setup
    sender = RecordingSender()
    first = sign_rotation(keys.private("old"), 1, add=[keys.public("new")])
    second = sign_rotation(keys.private("new"), 2, revoke=[keys.ids["old"]])
    _register(setup, first)
    assert publish_pending_keys(sessions, sender, "trapline", NOW) == 3
    assert publish_pending_keys(sessions, sender, "trapline", NOW) == 0  # the broker holds them
    _register(setup, second, ["trap-02"])  # a canary first
    assert publish_pending_keys(sessions, sender, "trapline", NOW) == 1
    commands = {t.split("/")[1]: KeysCommand.model_validate_json(p) for t, p in sender.sent.items()}
    assert [s.sequence for s in commands["trap-01"].statements] == [1]
    assert [s.sequence for s in commands["trap-02"].statements] == [1, 2]  # a trap away catches up
    assert commands["trap-02"].statements[1] == second
    assert set(sender.sent) == {f"trapline/trap-0{n}/cmd/keys" for n in (1, 2, 3)}


def _report(sessions: sessionmaker[Session], device_id: str, **fields: Any) -> None:
    payload = {"ts": utc_now().isoformat(), **fields}
    with transaction(sessions) as session:
        store_batch(session, [accepted(f"trapline/{device_id}/ota", json.dumps(payload).encode())], [])


def test_the_traps_reports_record_who_applied_what(
    setup: tuple[ServerSettings, sessionmaker[Session]], keys: Keys
) -> None:
    _, sessions = setup
    _register(setup, sign_rotation(keys.private("old"), 1, add=[keys.public("new")]))
    trusted = sorted([keys.ids["old"], keys.ids["new"]])
    _report(sessions, "trap-01", stage="keys_applied", key_sequence=1, trusted_keys=trusted, reason="ok")
    _report(sessions, "trap-02", stage="keys_refused", key_sequence=1, reason="signed by key x, not trusted")
    _report(sessions, "trap-01", stage="keys_applied", key_sequence=0, trusted_keys=[keys.ids["old"]])  # late
    with sessions() as session:
        rows = {r.device_id: r for r in session.scalars(select(DeviceKeyring))}
        assert session.scalars(select(DeviceModelStatus)).first() is None  # not a model update
    assert (rows["trap-01"].applied_sequence, rows["trap-01"].trusted_keys) == (1, trusted)
    assert rows["trap-02"].applied_sequence is None
    assert (rows["trap-02"].refused_sequence, rows["trap-02"].refused_reason) == (
        1,
        "signed by key x, not trusted",
    )
    assert rows["trap-03"].applied_sequence is None and rows["trap-03"].desired_sequence == 1


def _signed_by(release: KitRelease, private_key: Path, folder: Path) -> Path:
    """The same bundle, signed by another key (as the release manager would after a rotation)."""
    copy = folder / f"{release.folder.name}-{private_key.stem}"
    shutil.copytree(release.folder, copy)
    sign_bundle(copy, ModelManifest.read(copy / "manifest.json"), private_key)
    return copy


def test_releases_are_checked_against_the_rotated_keyring(
    setup: tuple[ServerSettings, sessionmaker[Session]],
    keys: Keys,
    kit: ReleaseKit,
    release_v2: KitRelease,
    tmp_path: Path,
) -> None:
    settings, sessions = setup
    by_new = _signed_by(release_v2, keys.private("new"), tmp_path)
    by_old = _signed_by(release_v2, keys.private("old"), tmp_path)
    with transaction(sessions) as session, pytest.raises(ReleaseError, match="not in"):
        register_release(session, settings, by_new)  # not trusted yet
    _register(setup, sign_rotation(keys.private("old"), 1, add=[keys.public("new")]))
    _register(setup, sign_rotation(keys.private("new"), 2, revoke=[keys.ids["old"]]))
    with transaction(sessions) as session, pytest.raises(ReleaseError, match="not in"):
        register_release(session, settings, by_old)  # revoked, although still in the folder
    with transaction(sessions) as session:
        release = register_release(session, settings, by_new)
        assert release.key_id == keys.ids["new"]


def test_the_cli_publishes_to_a_group_and_shows_who_applied_it(
    sqlite_url: str,
    tmp_path: Path,
    keys: Keys,
    sessions_for: Callable[[str], sessionmaker[Session]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from trapline.cli.main import main

    ring = tmp_path / "release-keyring"
    install_public_key(ring, (keys.folder / "old.pub").read_bytes())
    monkeypatch.setenv("TRAPLINE_SERVER_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("TRAPLINE_SERVER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TRAPLINE_SERVER_RELEASE_KEYRING", str(ring))
    sessions = sessions_for(sqlite_url)
    register(sessions, "trap-01", "trap-02")

    def run(*args: str) -> tuple[int, str]:
        code = main(list(args))
        return code, capsys.readouterr().out

    statement = tmp_path / "rotation-1.json"
    code, out = run(
        "keys", "rotate", "--add", str(keys.folder / "new.pub"), "--signing-key", str(keys.private("old")),
        "--keyring", str(ring), "--sequence", "1", "--out", str(statement),
    )  # fmt: skip
    assert code == 0, out
    assert run("server", "keys", "publish", str(statement), "--group", "canary") == (
        1,
        "refused: the group 'canary' has no traps\n",
    )
    assert run("server", "group", "set", "canary", "trap-02")[0] == 0
    code, out = run("server", "keys", "publish", str(statement), "--group", "canary")
    assert code == 0 and "for 1 trap(s)" in out, out
    forged = tmp_path / "forged.json"
    forged.write_text(
        sign_rotation(keys.private("stranger"), 2, add=[keys.public("stranger")]).model_dump_json(
            by_alias=True
        )
    )
    code, out = run("server", "keys", "publish", str(forged))
    assert code == 1 and "traps would refuse it" in out and "not trusted" in out
    not_json = tmp_path / "garbage.json"
    not_json.write_text("{}")
    assert run("server", "keys", "publish", str(not_json))[1].startswith("refused: ")
    _report(
        sessions, "trap-02", stage="keys_refused", key_sequence=1, reason="could not write the new keyring"
    )
    lines = run("server", "keys", "status")[1].splitlines()
    assert lines[0].startswith(f"statement 1 by key {keys.ids['old']}: added {keys.ids['new']}, revoked none")
    assert len(lines) == 2 and lines[1].startswith("trap-02\tshould apply 1 (not yet published)\tapplied -")
    assert lines[1].endswith("refused 1: could not write the new keyring")
    trusted = sorted([keys.ids["old"], keys.ids["new"]])
    _report(sessions, "trap-02", stage="keys_applied", key_sequence=1, trusted_keys=trusted)
    line = run("server", "keys", "status")[1].splitlines()[1]
    assert "applied 1" in line and f"trusts {', '.join(trusted)}" in line and "refused" not in line
