from __future__ import annotations

from pathlib import Path

import pytest

from trapline.edge.config import PACKAGED_MODEL, ConfigError, MqttConfig, load_config

VALID = """
device_id: trap-07
source: {type: folder, path: /tmp/dcim}
mqtt: {host: broker.park.example, port: 8883, username: trap-07, tls: {ca_file: /etc/ssl/ca.pem}}
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.yaml"
    path.write_text(text)
    return path


def test_valid_config_fills_defaults(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, VALID))
    assert config.model.path == PACKAGED_MODEL
    assert config.bursts.gap_s == 3.0
    assert config.spool.policy == "drop_oldest"


@pytest.mark.parametrize(
    ("text", "field"),
    [
        (VALID + "spool: {max_byte: 10}\n", "spool.max_byte"),  # typo in a field name
        (VALID.replace("trap-07\n", "'trap 07/#'\n", 1), "device_id"),
        (VALID.replace("type: folder", "type: webcam"), "source"),
        (VALID + "bursts: {gap_s: -1}\n", "bursts.gap_s"),
        (VALID + "mqtt_password: hunter2\n", "mqtt_password"),  # secrets never in the file
        (VALID.replace("port: 8883", "port: 99999"), "mqtt.port"),
        # the broker's ACL lets a trap write only under its own user name
        (VALID.replace("username: trap-07", "username: trap-08"), "mqtt.username"),
    ],
)
def test_bad_config_names_the_field(tmp_path: Path, text: str, field: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(_write(tmp_path, text))
    assert field in str(error.value)


def test_unreadable_or_non_yaml_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(_write(tmp_path, "device_id: [unclosed"))


def test_password_comes_from_environment_or_systemd_credential(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mqtt = MqttConfig(username="trap-07")
    monkeypatch.delenv("TRAPLINE_MQTT_PASSWORD", raising=False)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert mqtt.password() is None
    (tmp_path / "mqtt-password").write_text("from-systemd\n")
    assert mqtt.password() == "from-systemd"
    monkeypatch.setenv("TRAPLINE_MQTT_PASSWORD", "from-env")
    assert mqtt.password() == "from-env"


def test_the_example_config_for_technicians_is_valid() -> None:
    example = Path(__file__).resolve().parents[2] / "edge" / "agent.example.yaml"
    config = load_config(example)
    assert config.source.type == "folder"
    assert config.mqtt.tls is not None
