"""The database: devices, deployments, media, detections, sequences, models, releases, labels.

Detection messages are stored once per `id` (the contract's idempotency key): a redelivered
message hits the primary key and is ignored.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from trapline.contracts import CATEGORY_MAX, FILE_MAX, ID_MAX, MODEL_NAME_MAX, REASON_MAX, VERSION_MAX


class UtcDateTime(TypeDecorator[datetime]):
    """Aware datetimes in, aware UTC datetimes out, on SQLite (which drops offsets) as on PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: the database stores instants, give a timezone")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, datetime: UtcDateTime()}


class Device(Base):
    __tablename__ = "devices"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(200))
    state: Mapped[str] = mapped_column(String(16), default="unknown")  # online/offline/stopped
    state_at: Mapped[datetime | None]  # the trap's clock when it said so: shown, never used to order
    # when the server received the state: states are ordered by this, never by the trap's clock
    state_received_at: Mapped[datetime | None]
    # the trap's last status or heartbeat carried a time before 2000 or far ahead (no NTP yet)
    clock_suspect: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    agent_version: Mapped[str | None] = mapped_column(String(VERSION_MAX))
    model_name: Mapped[str | None] = mapped_column(String(MODEL_NAME_MAX))
    model_version: Mapped[str | None] = mapped_column(String(VERSION_MAX))
    last_heartbeat_at: Mapped[datetime | None]  # server receive time of the last heartbeat
    heartbeat: Mapped[dict[str, Any] | None]
    last_seen_at: Mapped[datetime | None]
    token_hash: Mapped[str | None] = mapped_column(String(128))  # for HTTP media upload
    mqtt_password_line: Mapped[str | None] = mapped_column(String(300))  # PBKDF2, Mosquitto format
    model_sha256: Mapped[str | None] = mapped_column(String(64))  # the model file it runs (status)


class HeartbeatSample(Base):
    """A trap's vital signs over time, for the fleet health charts. Bounded: at most one sample
    per trap per `heartbeat_sample_s`, none older than `heartbeat_history_days` (ingest prunes)."""

    __tablename__ = "heartbeat_samples"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    received_at: Mapped[datetime]  # the server's clock: traps' clocks may be wrong
    spool_depth: Mapped[int] = mapped_column(BigInteger)
    dropped: Mapped[int] = mapped_column(BigInteger)
    frames_processed: Mapped[int] = mapped_column(BigInteger)
    disk_free_bytes: Mapped[int | None] = mapped_column(BigInteger)
    cpu_temp_c: Mapped[float | None] = mapped_column(Float)
    model_version: Mapped[str | None] = mapped_column(String(VERSION_MAX))

    __table_args__ = (Index("ix_heartbeat_samples_device_time", "device_id", "received_at"),)


class Deployment(Base):
    """Where a trap stood, when (Camtrap DP deployments)."""

    __tablename__ = "deployments"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"), index=True)
    location_name: Mapped[str | None] = mapped_column(String(200))
    latitude: Mapped[float | None] = mapped_column(Float)
    longitude: Mapped[float | None] = mapped_column(Float)
    start: Mapped[datetime]
    end: Mapped[datetime | None]
    # recorded by `trapline provision` (Camtrap DP deployment fields); migration 0002_fleetops
    site_id: Mapped[str | None] = mapped_column(ForeignKey("sites.id"), index=True)
    camera_height_m: Mapped[float | None] = mapped_column(Float)
    camera_heading_deg: Mapped[float | None] = mapped_column(Float)
    camera_tilt_deg: Mapped[float | None] = mapped_column(Float)
    # the scene as set up, content-addressed in the media store (the trap compares against it)
    reference_photo_sha256: Mapped[str | None] = mapped_column(String(64))
    setup_by: Mapped[str | None] = mapped_column(String(100))
    comments: Mapped[str | None] = mapped_column(String(REASON_MAX))


class Site(Base):
    """A place traps stand at, with the rules the traps there apply (privacy)."""

    __tablename__ = "sites"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(200))
    blur_people: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime]


class DeviceEnrolment(Base):
    """A device's registration: its one-time enrolment token (hash), when it expires and when it
    was used, and when the device was taken out of service. One row per device."""

    __tablename__ = "device_enrolments"
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"), primary_key=True)
    site_id: Mapped[str | None] = mapped_column(ForeignKey("sites.id"))
    token_hash: Mapped[str | None] = mapped_column(String(128), unique=True)
    token_expires_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    enrolled_at: Mapped[datetime | None]
    decommissioned_at: Mapped[datetime | None]


class Media(Base):
    """A picture uploaded by a trap for a detection. The bytes are stored once, content-addressed
    (media/<sha256[:2]>/<sha256>); identical pictures of two frames are two rows, one file."""

    __tablename__ = "media"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # one of trapline.contracts.MEDIA_KINDS
    detection_id: Mapped[str | None] = mapped_column(String(ID_MAX), index=True)
    content_type: Mapped[str] = mapped_column(String(40))
    bytes: Mapped[int] = mapped_column(BigInteger)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    uploaded_at: Mapped[datetime]

    __table_args__ = (UniqueConstraint("sha256", "detection_id", "kind", name="uq_media_link"),)


class DetectionFrame(Base):
    """One processed frame (one detection message)."""

    __tablename__ = "detection_frames"
    id: Mapped[str] = mapped_column(String(ID_MAX), primary_key=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"))
    captured_at: Mapped[datetime]
    processed_at: Mapped[datetime]
    received_at: Mapped[datetime]
    sequence_id: Mapped[str] = mapped_column(String(ID_MAX), index=True)
    frame_index: Mapped[int] = mapped_column(Integer)
    image_file: Mapped[str] = mapped_column(String(FILE_MAX))
    image_sha256: Mapped[str] = mapped_column(String(64), index=True)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    night: Mapped[bool] = mapped_column(Boolean)
    model_name: Mapped[str] = mapped_column(String(MODEL_NAME_MAX))
    model_version: Mapped[str] = mapped_column(String(VERSION_MAX))
    inference_ms: Mapped[float] = mapped_column(Float)
    detection_count: Mapped[int] = mapped_column(Integer)
    max_conf: Mapped[float] = mapped_column(Float)
    categories: Mapped[str] = mapped_column(Text)  # ",animal,person," for filtering
    # captured_at is before 2000 or far ahead of received_at: the trap's clock was not set
    clock_suspect: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    __table_args__ = (Index("ix_frames_device_time", "device_id", "captured_at"),)


class Detection(Base):
    """One box of a frame."""

    __tablename__ = "detections"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    frame_id: Mapped[str] = mapped_column(ForeignKey("detection_frames.id", ondelete="CASCADE"), index=True)
    category: Mapped[str] = mapped_column(String(CATEGORY_MAX), index=True)
    conf: Mapped[float] = mapped_column(Float)
    x: Mapped[float] = mapped_column(Float)
    y: Mapped[float] = mapped_column(Float)
    w: Mapped[float] = mapped_column(Float)
    h: Mapped[float] = mapped_column(Float)


class Sequence(Base):
    __tablename__ = "sequences"
    id: Mapped[str] = mapped_column(String(ID_MAX), primary_key=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"), index=True)
    first_frame_at: Mapped[datetime]
    last_frame_at: Mapped[datetime]
    frame_count: Mapped[int] = mapped_column(Integer)
    categories: Mapped[dict[str, Any]]
    mean_class_probabilities: Mapped[dict[str, Any]]


class ModelVersion(Base):
    __tablename__ = "models"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(MODEL_NAME_MAX))
    version: Mapped[str] = mapped_column(String(VERSION_MAX))
    sha256: Mapped[str | None] = mapped_column(String(64))
    metrics: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]


class Release(Base):
    """A signed bundle the traps may download (`bundle_url`, served with Range support)."""

    __tablename__ = "releases"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    bundle_url: Mapped[str] = mapped_column(String(500))
    bundle_sha256: Mapped[str] = mapped_column(String(64))  # of the archive
    signature: Mapped[str] = mapped_column(Text)  # manifest.sig, base64
    created_at: Mapped[datetime]
    name: Mapped[str | None] = mapped_column(String(MODEL_NAME_MAX))
    version: Mapped[str | None] = mapped_column(String(VERSION_MAX))
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    archive_file: Mapped[str | None] = mapped_column(String(500))  # inside the releases folder
    model_sha256: Mapped[str | None] = mapped_column(String(64), index=True)
    key_id: Mapped[str | None] = mapped_column(String(16))
    runtime: Mapped[str | None] = mapped_column(String(16))
    min_agent_version: Mapped[str | None] = mapped_column(String(VERSION_MAX))
    rollback_grant: Mapped[dict[str, Any] | None]  # a release key's permission to go back to it


class DeviceGroup(Base):
    """Named sets of traps, e.g. the canary group a rollout starts with."""

    __tablename__ = "device_groups"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"), primary_key=True)


class Rollout(Base):
    """A release going out in stages: the canary group, then growing shares of the fleet."""

    __tablename__ = "rollouts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    release_id: Mapped[int] = mapped_column(ForeignKey("releases.id"))
    state: Mapped[str] = mapped_column(String(16))  # running/paused/halted/completed/rolled_back/cancelled
    canary_group: Mapped[str | None] = mapped_column(String(64))
    percentages: Mapped[list[Any]]  # of the fleet, one stage each, after the canary group
    stage: Mapped[int] = mapped_column(Integer, default=0)
    max_failure_percent: Mapped[float] = mapped_column(Float)
    success_percent: Mapped[float] = mapped_column(Float)
    spread_s: Mapped[int] = mapped_column(Integer)
    tolerated_failures: Mapped[int] = mapped_column(Integer, default=0)  # known when an operator resumed
    reason: Mapped[str | None] = mapped_column(String(REASON_MAX))
    created_by: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class DeviceRelease(Base):
    """Per trap: the release it should run (published as its retained cmd/model), the one before,
    and how the update is going (its latest `ota` report for that release)."""

    __tablename__ = "device_releases"
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"), primary_key=True)
    desired_release_id: Mapped[int | None] = mapped_column(ForeignKey("releases.id"))
    previous_release_id: Mapped[int | None] = mapped_column(ForeignKey("releases.id"))
    rollout_id: Mapped[int | None] = mapped_column(ForeignKey("rollouts.id"), index=True)
    assigned_at: Mapped[datetime | None]
    published: Mapped[bool] = mapped_column(Boolean, default=False)  # the broker holds the desired state
    published_at: Mapped[datetime | None]
    stage: Mapped[str | None] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(REASON_MAX))
    stage_at: Mapped[datetime | None]
    previous_model_name: Mapped[str | None] = mapped_column(String(MODEL_NAME_MAX))
    previous_model_version: Mapped[str | None] = mapped_column(String(VERSION_MAX))


class DeviceModelStatus(Base):
    """OTA progress per trap and release."""

    __tablename__ = "device_model_status"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"), index=True)
    version: Mapped[str] = mapped_column(String(VERSION_MAX))
    stage: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(REASON_MAX))
    at: Mapped[datetime]
    release_id: Mapped[int | None] = mapped_column(Integer)
    received_at: Mapped[datetime | None]

    # a redelivered progress message is the same row
    __table_args__ = (UniqueConstraint("device_id", "version", "stage", "at", name="uq_ota_progress"),)


class KeyRotation(Base):
    """A signed key rotation statement (`trapline keys rotate`), registered to go to the traps."""

    __tablename__ = "key_rotations"
    sequence: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    statement: Mapped[dict[str, Any]]  # the KeyRotationStatement as it travels
    digest: Mapped[str] = mapped_column(String(64))  # trapline.key_rotation.statement_digest
    signer_key_id: Mapped[str] = mapped_column(String(16))
    issued_at: Mapped[datetime]
    registered_at: Mapped[datetime]


class DeviceKeyring(Base):
    """Per trap: the newest statement it should apply (published with those before it as its
    retained cmd/keys) and what it reported on `ota` (keys_applied, keys_refused)."""

    __tablename__ = "device_keyrings"
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"), primary_key=True)
    desired_sequence: Mapped[int | None] = mapped_column(Integer)
    published: Mapped[bool] = mapped_column(Boolean, default=False)  # the broker holds the desired state
    published_at: Mapped[datetime | None]
    applied_sequence: Mapped[int | None] = mapped_column(Integer)
    applied_at: Mapped[datetime | None]
    trusted_keys: Mapped[list[Any] | None]  # key ids, as the trap reported them
    refused_sequence: Mapped[int | None] = mapped_column(Integer)
    refused_reason: Mapped[str | None] = mapped_column(String(REASON_MAX))
    refused_at: Mapped[datetime | None]


class Label(Base):
    """A biologist's label for a detection or a whole sequence."""

    __tablename__ = "labels"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    frame_id: Mapped[str | None] = mapped_column(ForeignKey("detection_frames.id"))
    sequence_id: Mapped[str | None] = mapped_column(String(ID_MAX))
    species: Mapped[str] = mapped_column(String(200))
    labelled_by: Mapped[str] = mapped_column(String(100))
    labelled_at: Mapped[datetime]


class DeadLetter(Base):
    """A message that broke the contract: kept, with why, never retried automatically."""

    __tablename__ = "dead_letters"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    topic: Mapped[str] = mapped_column(String(300))
    reason: Mapped[str] = mapped_column(String(1000))
    payload: Mapped[bytes | None]
    payload_bytes: Mapped[int] = mapped_column(Integer)
    received_at: Mapped[datetime]
    # sha256 of topic and payload: a redelivered dead letter is stored once
    digest: Mapped[str | None] = mapped_column(String(64), unique=True)


class ApiToken(Base):
    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    token_hash: Mapped[str] = mapped_column(String(128), unique=True)
    role: Mapped[str] = mapped_column(String(16))  # admin / viewer
    created_at: Mapped[datetime]


class WebSession(Base):
    """A dashboard login: the cookie holds a random session id, the database only its hash.
    It expires, and logging out deletes it (the API token itself never goes into a cookie)."""

    __tablename__ = "web_sessions"
    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    token_id: Mapped[int] = mapped_column(ForeignKey("api_tokens.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)


class Job(Base):
    """A background job's visible state (the task queue runs it)."""

    __tablename__ = "jobs"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    kind: Mapped[str] = mapped_column(String(40))
    params: Mapped[dict[str, Any]]
    state: Mapped[str] = mapped_column(String(16))  # queued/running/done/failed
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    message: Mapped[str | None] = mapped_column(String(1000))
    result_path: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


# --- the learning loop: features, clusters, review labels, retraining -------------------------


class WorkChunk(Base):
    """A slice of a job's items (detection ids) that one worker claims under a lease. A worker that
    dies leaves its lease to expire and another takes the chunk over, so nothing is lost; a chunk's
    result is written atomically under its own name, so nothing is stored twice."""

    __tablename__ = "work_chunks"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    index: Mapped[int] = mapped_column(Integer)
    items: Mapped[list[Any]]
    state: Mapped[str] = mapped_column(String(16))  # pending / running / done
    worker: Mapped[str | None] = mapped_column(String(100))
    lease_until: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    done_at: Mapped[datetime | None]

    __table_args__ = (UniqueConstraint("job_id", "index", name="uq_work_chunk"),)


class ClusteringRun(Base):
    """One clustering of the stored crop features; its plots and report live in `path`."""

    __tablename__ = "clustering_runs"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    job_id: Mapped[str | None] = mapped_column(String(36))
    created_at: Mapped[datetime]
    extractor: Mapped[str] = mapped_column(String(40))
    mode: Mapped[str] = mapped_column(String(40))
    state: Mapped[str] = mapped_column(String(16))  # running / done / failed
    crops: Mapped[int] = mapped_column(Integer, default=0)
    k: Mapped[int | None] = mapped_column(Integer)
    report: Mapped[dict[str, Any]]
    path: Mapped[str] = mapped_column(String(500))


class ClusterMember(Base):
    """A crop's place in a run: its cluster (-1: the "unknown" queue), how sure, how typical."""

    __tablename__ = "cluster_members"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("clustering_runs.id", ondelete="CASCADE"))
    # a stored box, or (media_id) a below-threshold candidate crop a trap sent on its own
    detection_id: Mapped[int | None] = mapped_column(
        ForeignKey("detections.id", ondelete="CASCADE"), index=True
    )
    media_id: Mapped[int | None] = mapped_column(ForeignKey("media.id", ondelete="CASCADE"), index=True)
    cluster: Mapped[int] = mapped_column(Integer)
    nearest_cluster: Mapped[int] = mapped_column(Integer)
    probability: Mapped[float] = mapped_column(Float)
    distance: Mapped[float] = mapped_column(Float)
    rank: Mapped[int] = mapped_column(Integer)  # 0 = the most representative crop of its cluster
    source_kind: Mapped[str] = mapped_column(String(16))
    suggestion: Mapped[str | None] = mapped_column(String(200))
    suggestion_probability: Mapped[float | None] = mapped_column(Float)

    __table_args__ = (Index("ix_cluster_members_run_cluster", "run_id", "cluster", "rank"),)


class CropLabel(Base):
    """A reviewer's label for one box: a species, "not an animal" or "unsure". Rows are never
    changed: a correction is a newer row, and the newest row per box is its label."""

    __tablename__ = "crop_labels"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    detection_id: Mapped[int | None] = mapped_column(
        ForeignKey("detections.id", ondelete="CASCADE"), index=True
    )
    media_id: Mapped[int | None] = mapped_column(ForeignKey("media.id", ondelete="CASCADE"), index=True)
    label: Mapped[str] = mapped_column(String(200))
    labelled_by: Mapped[str] = mapped_column(String(100))
    labelled_at: Mapped[datetime]
    run_id: Mapped[str | None] = mapped_column(String(36))
    cluster: Mapped[int | None] = mapped_column(Integer)


class IgnoreRegion(Base):
    """A static false positive a reviewer marked "not an animal": the trap demotes a detection at
    the same place with a similar look (sent on `cmd/ignore-regions`)."""

    __tablename__ = "ignore_regions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"), index=True)
    detection_id: Mapped[int] = mapped_column(ForeignKey("detections.id", ondelete="CASCADE"), unique=True)
    x: Mapped[float] = mapped_column(Float)
    y: Mapped[float] = mapped_column(Float)
    w: Mapped[float] = mapped_column(Float)
    h: Mapped[float] = mapped_column(Float)
    signature: Mapped[str] = mapped_column(String(600))
    created_at: Mapped[datetime]
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class RetrainRun(Base):
    """One retraining: the dataset it built, both models' numbers, the gate's verdict."""

    __tablename__ = "retrain_runs"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    job_id: Mapped[str | None] = mapped_column(String(36))
    created_at: Mapped[datetime]
    state: Mapped[str] = mapped_column(String(16))  # running / accepted / refused / failed
    labels_used: Mapped[int] = mapped_column(Integer, default=0)
    report: Mapped[dict[str, Any]]
    candidate_version: Mapped[str | None] = mapped_column(String(VERSION_MAX))
    model_id: Mapped[int | None] = mapped_column(ForeignKey("models.id"))
    path: Mapped[str] = mapped_column(String(500))
