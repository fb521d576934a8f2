"""The server's settings: secrets as SecretStr from the environment, a file, or systemd."""

from __future__ import annotations

from pathlib import Path

import pytest

from trapline.credentials import reveal
from trapline.server.core.config import ServerSettings

VARIABLES = ("TRAPLINE_SERVER_MQTT_PASSWORD", "TRAPLINE_SERVER_MQTT_PASSWORD_FILE", "CREDENTIALS_DIRECTORY")


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)


def test_mqtt_password_from_each_place_and_never_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert ServerSettings().mqtt_password is None
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    (tmp_path / "mqtt-password").write_text("from-systemd\n")
    assert reveal(ServerSettings().mqtt_password) == "from-systemd"
    (tmp_path / "secret").write_text("from-file")
    monkeypatch.setenv("TRAPLINE_SERVER_MQTT_PASSWORD_FILE", str(tmp_path / "secret"))
    assert reveal(ServerSettings().mqtt_password) == "from-file"
    monkeypatch.setenv("TRAPLINE_SERVER_MQTT_PASSWORD", "from-env")
    settings = ServerSettings()
    assert reveal(settings.mqtt_password) == "from-env"
    assert "from-env" not in repr(settings) and "from-env" not in settings.model_dump_json()


def test_unknown_setting_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="extra"):
        ServerSettings(mqtt_passwrd="typo")  # type: ignore[call-arg]
