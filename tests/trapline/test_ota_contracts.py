"""The model-update contract: commands, progress reports, release versions and signed rollbacks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from trapline.contracts import OtaProgress, parse_payload, rollback_statement, version_key
from trapline.keyring import Keyring, KeyringError, generate_keys, install_public_key
from trapline.rollback import sign_rollback, verify_rollback

COMMAND: dict[str, Any] = {
    "schema": "trapline.cmd.model/1", "release_id": 3, "rollout_id": None, "name": "trapline-nano",
    "version": "2", "url": "/api/v1/releases/3/bundle", "sha256": "a" * 64, "size": 2725268,
    "model_sha256": "b" * 64, "key_id": "6825e79719a3e851", "runtime": "onnx", "min_agent_version": None,
    "rollback": None, "download_delay_s": 0, "issued_at": "2026-11-30T12:00:00.000+00:00",
}  # fmt: skip


def test_a_model_command_round_trips() -> None:
    command = parse_payload("cmd/model", json.dumps(COMMAND))
    assert json.loads(command.to_json()) == COMMAND


@pytest.mark.parametrize(
    "change",
    [
        {"version": "2-beta"},  # traps compare versions: numbers only
        {"version": "1.2.3.4.5"},
        {"url": "file:///etc/passwd"},
        {"url": "/with space"},
        {"size": 0},
        {"size": 5 * 1024**3},
        {"sha256": "A" * 64},
        {"key_id": "not-a-key"},
        {"download_delay_s": -1},
        {"download_delay_s": 8 * 24 * 3600},
        {"runtime": "../onnx"},
        {"release_id": "3"},  # no coercion
        {"rollback": {"key_id": "6825e79719a3e851", "signature": "short"}},
        {"schema": "trapline.cmd.model/2"},
        {"extra": True},
    ],
)
def test_off_contract_commands_are_rejected(change: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        parse_payload("cmd/model", json.dumps({**COMMAND, **change}))


def test_progress_reports_carry_a_stage_from_the_list() -> None:
    report = {"ts": "2026-11-30T12:00:00.000+00:00", "release_id": 3, "version": "2", "stage": "switched",
              "switch_ms": 12.5, "model": {"name": "trapline-nano", "version": "2", "sha256": "b" * 64}}  # fmt: skip
    assert isinstance(parse_payload("ota", json.dumps(report)), OtaProgress)
    with pytest.raises(ValidationError):
        parse_payload("ota", json.dumps({**report, "stage": "exploded"}))
    with pytest.raises(ValidationError):
        parse_payload("ota", json.dumps({**report, "switch_ms": -1.0}))


def test_versions_compare_as_numbers() -> None:
    assert version_key("10") > version_key("9")  # type: ignore[operator]
    assert version_key("1.10") > version_key("1.9")  # type: ignore[operator]
    assert version_key("2.0") == version_key("2") == (2,)
    assert version_key("0.9") < version_key("1")  # type: ignore[operator]
    assert version_key("v2") is None and version_key("") is None


def test_a_rollback_grant_is_for_one_model_only(tmp_path: Path) -> None:
    key = generate_keys(tmp_path / "release.key", tmp_path / "release.pub")
    install_public_key(tmp_path / "ring", (tmp_path / "release.pub").read_bytes())
    other = generate_keys(tmp_path / "other.key", tmp_path / "other.pub")
    keyring = Keyring.load(tmp_path / "ring")
    grant = sign_rollback(tmp_path / "release.key", "trapline-nano", "1", "c" * 64)
    assert grant.key_id == key
    assert verify_rollback(grant, keyring, "trapline-nano", "1", "c" * 64) == key
    for name, version, sha in (("trapline-nano", "0.9", "c" * 64), ("trapline-nano", "1", "d" * 64),
                               ("other", "1", "c" * 64)):  # fmt: skip
        with pytest.raises(KeyringError):
            verify_rollback(grant, keyring, name, version, sha)
    untrusted = sign_rollback(tmp_path / "other.key", "trapline-nano", "1", "c" * 64)
    assert untrusted.key_id == other
    with pytest.raises(KeyringError, match="not in"):
        verify_rollback(untrusted, keyring, "trapline-nano", "1", "c" * 64)
    assert rollback_statement("n", "1", "c" * 64) == b"trapline.rollback/1\nn\n1\n" + b"c" * 64 + b"\n"
