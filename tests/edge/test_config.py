from __future__ import annotations

from pathlib import Path

import pytest

from trapline.credentials import SecretError, reveal
from trapline.edge.backends import BACKENDS
from trapline.edge.config import (
    BACKEND_CHOICES,
    PACKAGED_MODEL,
    ConfigError,
    ModelConfig,
    MqttConfig,
    UploadConfig,
    load_config,
)

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
        (VALID + "model: {backend: tensorrt}\n", "model.backend"),
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


def test_password_comes_from_environment_file_or_systemd_credential(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mqtt = MqttConfig(username="trap-07")
    for name in ("TRAPLINE_MQTT_PASSWORD", "TRAPLINE_MQTT_PASSWORD_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert mqtt.password() is None
    (tmp_path / "mqtt-password").write_text("from-systemd\n")
    assert reveal(mqtt.password()) == "from-systemd"
    (tmp_path / "container-secret").write_text("from-env-file")
    monkeypatch.setenv("TRAPLINE_MQTT_PASSWORD_FILE", str(tmp_path / "container-secret"))
    assert reveal(mqtt.password()) == "from-env-file"
    (tmp_path / "pw").write_text("from-config-file\n")
    in_file = MqttConfig(username="trap-07", password_file=tmp_path / "pw")
    assert reveal(in_file.password()) == "from-config-file"
    monkeypatch.setenv("TRAPLINE_MQTT_PASSWORD", "from-env")
    assert reveal(in_file.password()) == "from-env"
    assert "from-env" not in repr(in_file.password())  # a SecretStr never shows in logs


def test_a_named_secret_file_that_cannot_be_read_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TRAPLINE_UPLOAD_TOKEN", raising=False)
    upload = UploadConfig(token_file=tmp_path / "missing-token")
    with pytest.raises(SecretError, match="missing-token"):
        upload.token()
    config = _write(tmp_path, VALID + f"upload: {{token_file: {tmp_path / 'missing-token'}}}\n")
    with pytest.raises(ConfigError, match="missing-token"):
        load_config(config)  # at start (exit 78), not at the first upload


def test_backend_choices_are_the_backend_registry() -> None:
    assert ("auto", *BACKENDS) == BACKEND_CHOICES
    schema = ModelConfig.model_json_schema()["properties"]["backend"]
    assert schema["enum"] == ["auto", "onnxruntime", "litert", "tflite-runtime"]
    assert ModelConfig(backend="tflite-runtime").backend == "tflite-runtime"


def test_the_example_config_for_technicians_is_valid() -> None:
    example = Path(__file__).resolve().parents[2] / "edge" / "agent.example.yaml"
    config = load_config(example)
    assert config.source.type == "folder"
    assert config.mqtt.tls is not None
