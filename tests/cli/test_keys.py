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
