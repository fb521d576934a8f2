"""The server's settings: one BaseSettings, from TRAPLINE_SERVER_* environment variables."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from trapline.contracts import DEFAULT_PREFIX
from trapline.edge.config import PACKAGED_MODEL, PACKAGED_PUBLIC_KEY

SQLITE_PREFIX = "sqlite:///"


def default_data_dir() -> Path:
    """systemd's StateDirectory= when run by the shipped units (/var/lib/trapline), and the same
    place otherwise: never a path relative to wherever the server happened to start."""
    return Path(os.environ.get("STATE_DIRECTORY", "/var/lib/trapline").split(":")[0])


class ServerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TRAPLINE_SERVER_", extra="forbid")

    database_url: str = Field(
        "",
        description="SQLAlchemy URL: sqlite:///path or postgresql+psycopg://user:pw@host/db "
        "(default: SQLite in data_dir)",
    )
    data_dir: Path = Field(
        default_factory=default_data_dir,
        description="media store, job files, task queue (default $STATE_DIRECTORY or /var/lib/trapline)",
    )
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
    ingest_receive_maximum: int = Field(
        2000,
        gt=0,
        le=65535,
        description="unacknowledged messages the broker may send the worker at once (MQTT 5 flow "
        "control); bounds the worker's memory; at least ingest_batch_size",
    )
    auto_register: bool = Field(False, description="accept messages from devices nobody registered")
    max_payload_bytes: int = Field(256 * 1024, gt=0, description="larger messages are dead letters")
    stale_after_s: float = Field(3 * 3600, gt=0, description="a trap silent this long is stale")
    inference_model: Path = Field(
        PACKAGED_MODEL,
        description="bundle the inference endpoint runs",
    )
    release_public_key: Path = Field(
        PACKAGED_PUBLIC_KEY,
        description="public key model bundles must be signed with",
    )
    task_queue: str = Field(
        "sqlite", description="background jobs: 'sqlite' (one machine) or a redis:// URL (several)"
    )
    session_hours: float = Field(12, gt=0, description="dashboard login lifetime")
    max_upload_bytes: int = Field(
        50 * 1024 * 1024, gt=0, description="largest picture a trap may upload or /inference accepts"
    )
    inference_threads: int = Field(
        2, gt=0, le=64, description="pictures /inference decodes and runs at once (more wait)"
    )
    export_concurrency: int = Field(
        1, gt=0, le=16, description="exports built at once; more requests get 429 (try again later)"
    )
    allow_http_uploads: bool = Field(
        False,
        description="accept trap upload tokens over plain http from other machines (loopback and "
        "https are always accepted); leave off unless the network itself is trusted",
    )
    public_api_docs: bool = Field(False, description="serve /docs and /openapi.json without logging in")
    dead_letter_retention_days: float = Field(
        30, ge=0, description="dead letters older than this are deleted (0: keep for ever)"
    )
    job_retention_days: float = Field(
        7, ge=0, description="finished jobs and their ZIP files older than this are deleted (0: keep)"
    )
    media_retention_days: float = Field(
        0,
        ge=0,
        description="pictures uploaded longer ago than this are deleted (0, the default: keep for "
        "ever; pictures are the survey's evidence)",
    )
    retention_interval_minutes: int = Field(
        60, gt=0, le=1440, description="how often the job worker applies the retention settings"
    )

    @model_validator(mode="after")
    def _absolute_paths(self) -> ServerSettings:
        # under systemd the working directory is /: a relative path would land somewhere read-only
        self.data_dir = self.data_dir.expanduser().absolute()
        if not self.database_url:
            self.database_url = f"{SQLITE_PREFIX}{self.data_dir / 'trapline.sqlite'}"
        elif self.database_url.startswith(SQLITE_PREFIX) and ":memory:" not in self.database_url:
            path = Path(self.database_url.removeprefix(SQLITE_PREFIX)).expanduser()
            self.database_url = f"{SQLITE_PREFIX}{path.absolute()}"
        if self.ingest_receive_maximum < self.ingest_batch_size:
            raise ValueError("ingest_receive_maximum must be at least ingest_batch_size")
        return self

    @property
    def media_dir(self) -> Path:
        return self.data_dir / "media"

    @property
    def jobs_dir(self) -> Path:
        return self.data_dir / "jobs"
