"""The server's settings: one BaseSettings, from TRAPLINE_SERVER_* environment variables.

Secrets (the ingest worker's MQTT password) are `SecretStr`, read through trapline.credentials:
the variable itself, a file named by `<variable>_FILE`, or a systemd credential.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from trapline.contracts import DEFAULT_PREFIX, UPLINK_KINDS, TopicKind
from trapline.credentials import read_secret
from trapline.edge.config import PACKAGED_KEYRING, PACKAGED_MODEL

_PREFIX = "TRAPLINE_SERVER_"
SQLITE_PREFIX = "sqlite:///"


def default_data_dir() -> Path:
    """systemd's StateDirectory= when run by the shipped units (/var/lib/trapline), and the same
    place otherwise: never a path relative to wherever the server happened to start."""
    return Path(os.environ.get("STATE_DIRECTORY", "/var/lib/trapline").split(":")[0])


@dataclass(frozen=True)
class HeartbeatHistory:
    """How much heartbeat history the fleet charts keep: bounded in rate and in age."""

    sample_every: timedelta = timedelta(minutes=5)
    keep: timedelta = timedelta(days=30)


class ServerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=_PREFIX, extra="forbid")

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
    mqtt_password: SecretStr | None = Field(
        None,
        description="its password: this variable, a file named by TRAPLINE_SERVER_MQTT_PASSWORD_FILE,"
        " or the systemd credential mqtt-password; never in a config file",
    )
    mqtt_share_group: str | None = Field(
        None,
        description="MQTT 5 shared-subscription group for several ingest workers (`ingest`); unset, the"
        " one worker subscribes directly. Mosquitto drops messages for a $share group whose members"
        " have not reconnected after a broker restart; a direct subscription queues them",
    )
    mqtt_client_id: str = Field("trapline-ingest-1", description="unique per ingest worker")
    ingest_topics: Annotated[tuple[TopicKind, ...], NoDecode] = Field(
        UPLINK_KINDS,
        description="the trap topics this ingest worker subscribes to, comma-separated (default: all"
        " of them). Two workers split a fleet's traffic without $share, each with its own persistent"
        " session: one `detections`, the other `status,sequences,heartbeat,ota`",
    )
    ingest_batch_size: int = Field(1000, gt=0, description="messages per database commit")
    ingest_batch_seconds: float = Field(0.2, gt=0, description="longest wait before a commit")
    ingest_receive_maximum: int = Field(
        4000,
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
    release_keyring: Path = Field(
        PACKAGED_KEYRING,
        description="trusted release keys (a folder of <key id>.pub files, or one .pub file)",
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
    heartbeat_sample_s: float = Field(
        300, gt=0, description="fleet health history: at most one heartbeat kept per trap this often"
    )
    heartbeat_history_days: float = Field(30, gt=0, description="fleet health history: days kept")
    map_tile_url: str | None = Field(
        None,
        description="dashboard map tiles, e.g. https://tile.openstreetmap.org/{z}/{x}/{y}.png (mind the"
        " provider's usage policy); unset: a plain longitude/latitude plot that needs no internet",
    )
    map_tile_attribution: str = Field(
        "© OpenStreetMap contributors", description="credit shown on the map for the tiles"
    )
    ota_client_id: str = Field(
        "trapline-ota", description="MQTT client id of the rollout controller (publishes model commands)"
    )
    ota_tick_s: float = Field(5.0, gt=0, description="how often the rollout controller checks rollouts")
    # --- the learning loop: crop features, clusters, review, retraining -----------------------
    clustering_min_conf: float = Field(
        0.8, ge=0, le=1, description="boxes at or above this confidence are cropped and clustered"
    )
    feature_extractor: Literal["resnet152", "yolo-backbone"] = Field(
        "resnet152",
        description="resnet152: ImageNet ResNet-152, 2048-d (needs its weights file); yolo-backbone:"
        " the deployed detector's own pooled backbone features (offline)",
    )
    feature_runtime: Literal["onnxruntime", "torch"] = Field(
        "onnxruntime", description="ResNet-152 runs on ONNX Runtime (faster) or PyTorch"
    )
    resnet152_weights: Path | None = Field(
        None,
        description="torchvision's ImageNet ResNet-152 state dict (resnet152-f82ba261.pth);"
        " default <data_dir>/weights/resnet152-f82ba261.pth, downloaded there only when online",
    )
    feature_batch_size: int = Field(16, gt=0, le=512, description="crops per forward pass")
    feature_chunk_size: int = Field(
        256, gt=0, description="crops one worker claims at a time (the unit of resumption)"
    )
    work_lease_s: float = Field(
        120, gt=0, description="a claimed chunk whose worker stays silent this long is taken over"
    )
    clustering_k_max: int = Field(12, ge=2, le=200, description="largest k tried by the elbow/silhouette")
    clustering_illumination: Literal["none", "centre", "greyscale"] = Field(
        "centre",
        description="illumination-invariant mode: centre features per day/night group (measured best"
        " on the development photos, see README), greyscale crops, or none",
    )
    reference_labels: list[Path] = Field(
        default_factory=list,
        description="folders of development sets (metadata.jsonl + species.csv or image_labels.csv) whose"
        " species count as known when the server holds their photos (matched by SHA-256)",
    )
    clustering_threads: int = Field(
        2,
        ge=1,
        le=64,
        description="threads per worker for feature extraction, clustering and t-SNE"
        " (at most the free cores: more threads than cores make PyTorch far slower)",
    )
    signing_key: Path | None = Field(
        None,
        description="the operator's Ed25519 private key (`trapline keys generate`, mode 0600) that"
        " signs retrained bundles; never in the repository",
    )
    retrain_base_weights: Path | None = Field(
        None, description="the current model's PyTorch checkpoint (.pt) that retraining fine-tunes"
    )
    retrain_base_data: Path | None = Field(
        None, description="data.yaml of the existing training data (`trapline train prepare`)"
    )
    retrain_min_new_labels: int = Field(
        50, ge=1, description="the weekly retraining runs only when this many new labels exist"
    )
    retrain_epochs: int = Field(20, ge=1, description="fine-tuning epochs")
    retrain_imgsz: int = Field(416, ge=32, description="training and export input size")
    export_max_map50_drop: float = Field(
        1.0, ge=0, le=100, description="points of val mAP50 the INT8 export of a candidate may lose"
    )
    gate_tolerance: float = Field(
        0.0,
        ge=0,
        le=1,
        description="the gate refuses a candidate worse than the current model by more than this on"
        " any gated metric (animal AP50, image accuracy, empty-frame false-positive rate)",
    )

    @model_validator(mode="after")
    def _secrets_from_files(self) -> ServerSettings:
        if self.mqtt_password is None:
            self.mqtt_password = read_secret(f"{_PREFIX}MQTT_PASSWORD", "mqtt-password")
        return self

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

    @field_validator("ingest_topics", mode="before")
    @classmethod
    def _topic_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("ingest_topics")
    @classmethod
    def _uplink_topics(cls, kinds: tuple[TopicKind, ...]) -> tuple[TopicKind, ...]:
        if not kinds:
            raise ValueError("at least one topic")
        if downlink := [kind for kind in kinds if kind not in UPLINK_KINDS]:
            raise ValueError(
                f"not written by traps: {', '.join(downlink)} (choose from {', '.join(UPLINK_KINDS)})"
            )
        return tuple(dict.fromkeys(kinds))

    def heartbeat_history(self) -> HeartbeatHistory:
        return HeartbeatHistory(
            timedelta(seconds=self.heartbeat_sample_s), timedelta(days=self.heartbeat_history_days)
        )

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

    @property
    def jobs_dir(self) -> Path:
        return self.data_dir / "jobs"

    @property
    def learning_dir(self) -> Path:
        """Features, clustering runs and retraining runs."""
        return self.data_dir / "learning"

    @property
    def resnet152_weights_path(self) -> Path:
        return self.resnet152_weights or self.data_dir / "weights" / "resnet152-f82ba261.pth"
