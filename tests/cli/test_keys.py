"""`trapline keys`: generate, show, export into a keyring, list; never overwrite a private key."""

from __future__ import annotations

from pathlib import Path

import pytest

from trapline.cli.main import main
from trapline.keyring import Keyring


def test_key_lifecycle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "generate", "--out", str(tmp_path / "keys")]) == 0
    identity = capsys.readouterr().out.split("key id:")[1].split()[0]
    private = tmp_path / "keys" / "trapline-release.key"
    assert private.stat().st_mode & 0o777 == 0o600
    assert main(["keys", "generate", "--out", str(tmp_path / "keys")]) == 2  # never overwritten
    assert "never overwritten" in capsys.readouterr().out
    assert main(["keys", "show", str(private), str(tmp_path / "keys" / "trapline-release.pub")]) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()] == [identity, identity]
    # a keyring of the new key and the project's shipped one (a rotation keeps both for a while)
    shipped = Path(__file__).resolve().parents[2] / "edge" / "models" / "keyring" / "6825e79719a3e851.pub"
    assert main(["keys", "export", str(private), str(shipped), "--out", str(tmp_path / "ring")]) == 0
    assert not any(p.suffix == ".key" for p in (tmp_path / "ring").iterdir())  # public halves only
    capsys.readouterr()
    assert main(["keys", "list", str(tmp_path / "ring")]) == 0
    assert capsys.readouterr().out.split() == sorted([identity, "6825e79719a3e851"])
    assert set(Keyring.load(tmp_path / "ring").keys) == {identity, "6825e79719a3e851"}


def test_rotate_signs_a_statement_the_keyring_accepts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from trapline.contracts import KeyRotationStatement
    from trapline.key_rotation import apply_rotation
    from trapline.keyring import generate_keys

    keys = tmp_path / "keys"
    old = generate_keys(keys / "old.key", keys / "old.pub")
    new = generate_keys(keys / "new.key", keys / "new.pub")
    backup = generate_keys(keys / "backup.key", keys / "backup.pub")
    ring = tmp_path / "ring"
    assert main(["keys", "export", str(keys / "old.pub"), str(keys / "backup.pub"), "--out", str(ring)]) == 0
    capsys.readouterr()
    out = tmp_path / "rotation-1.json"
    args = ["keys", "rotate", "--add", str(keys / "new.pub"), "--revoke", backup, "--sequence", "1"]
    assert (
        main([*args, "--signing-key", str(keys / "old.key"), "--keyring", str(ring), "--out", str(out)]) == 0
    )
    printed = capsys.readouterr().out
    assert f"will trust: {', '.join(sorted([old, new]))}" in printed
    statement = KeyRotationStatement.model_validate_json(out.read_text())
    assert (statement.sequence, statement.key_id, statement.revoke) == (1, old, [backup])
    assert set(apply_rotation(Keyring.load(ring), statement).keys) == {old, new}
    # never overwritten: a sequence number is used once
    assert main([*args, "--signing-key", str(keys / "old.key"), "--out", str(out)]) == 2
    assert "never overwritten" in capsys.readouterr().out
    # refused before anything is written: revoking the signer, a signer the keyring does not
    # trust, a key id that is not one
    refusals = {
        "may not revoke the key that signs it": ["--revoke", old, "--signing-key", str(keys / "old.key")],
        "not trusted": ["--add", str(keys / "old.pub"), "--signing-key", str(keys / "new.key"), "--keyring", str(ring)],
        "takes key ids": ["--revoke", "not-a-key-id", "--signing-key", str(keys / "old.key")],
    }  # fmt: skip
    for expected, extra in refusals.items():
        target = tmp_path / f"{len(expected)}.json"
        assert main(["keys", "rotate", "--sequence", "2", *extra, "--out", str(target)]) == 2, expected
        assert expected in capsys.readouterr().out and not target.exists()
