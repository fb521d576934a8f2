"""The server's settings: one BaseSettings, from TRAPLINE_SERVER_* environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from trapline.contracts import DEFAULT_PREFIX
from trapline.edge.config import PACKAGED_KEYRING, PACKAGED_MODEL


class ServerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TRAPLINE_SERVER_", extra="forbid")

    database_url: str = Field(
        "sqlite:///var/trapline/trapline.sqlite",
        description="SQLAlchemy URL: sqlite:///path (default) or postgresql+psycopg://user:pw@host/db",
    )
    data_dir: Path = Field(Path("var/trapline"), description="media store, job files, task queue")
    mqtt_host: str = Field("localhost", description="broker host")
    mqtt_port: int = Field(1883, description="broker port")
    mqtt_prefix: str = Field(DEFAULT_PREFIX, description="topic prefix")
    mqtt_username: str | None = Field(None, description="the ingest worker's MQTT user")
    mqtt_password: str | None = Field(None, description="its password (environment only)")
    mqtt_share_group: str | None = Field(
        "ingest", description="MQTT 5 shared-subscription group; None subscribes directly"
    )
    mqtt_client_id: str = Field("trapline-ingest-1", description="unique per ingest worker")
    ingest_batch_size: int = Field(500, gt=0, description="messages per database commit")
    ingest_batch_seconds: float = Field(0.2, gt=0, description="longest wait before a commit")
    auto_register: bool = Field(False, description="accept messages from devices nobody registered")
    max_payload_bytes: int = Field(256 * 1024, gt=0, description="larger messages are dead letters")
    stale_after_s: float = Field(3 * 3600, gt=0, description="a trap silent this long is stale")
    inference_model: Path = Field(
        PACKAGED_MODEL,
        description="bundle the inference endpoint runs",
    )
    release_keyring: Path = Field(
        PACKAGED_KEYRING,
        description="trusted release keys (a folder of <key id>.pub files, or one .pub file)",
    )
    task_queue: str = Field(
        "sqlite", description="background jobs: 'sqlite' (one machine) or a redis:// URL (several)"
    )
    session_hours: float = Field(12, gt=0, description="dashboard login lifetime")
    # --- fleet operations: what enrolment hands a new trap, and the broker's credentials ---------
    public_url: str | None = Field(
        None,
        pattern=r"^https?://",
        description="the server's address as traps reach it (uploads); default: the enrolment request's",
    )
    trap_mqtt_host: str | None = Field(
        None, description="the broker's host as traps reach it (default mqtt_host)"
    )
    trap_mqtt_port: int | None = Field(
        None, ge=1, le=65535, description="its port for traps (default mqtt_port)"
    )
    trap_mqtt_tls: bool = Field(
        False, description="traps connect with TLS (port 8883 in the Mosquitto template)"
    )
    trap_mqtt_ca_file: Path | None = Field(
        None, description="CA certificate handed to traps at enrolment (a private CA); omit for a public one"
    )
    enrolment_token_hours: float = Field(
        72, gt=0, le=24 * 90, description="an enrolment token expires this long after it was issued"
    )
    mosquitto_auth_dir: Path | None = Field(
        None,
        description="where the server keeps Mosquitto's password file and ACL up to date (passwd, acl);"
        " None: run `trapline server mqtt-auth` by hand",
    )
    mosquitto_pid_file: Path | None = Field(
        None,
        description="Mosquitto's pid file: the server sends it SIGHUP after changing credentials (same"
        " user only; under systemd the trapline-mosquitto-reload.path unit reloads instead)",
    )

    @property
    def media_dir(self) -> Path:
        return self.data_dir / "media"
