"""The agent's configuration: one YAML file, validated strictly, with secrets kept out of it.

The MQTT password and the upload token come from the environment (`TRAPLINE_MQTT_PASSWORD`,
`TRAPLINE_UPLOAD_TOKEN`), a file the config names (`password_file`, `token_file`), or a systemd
credential (`mqtt-password`, `upload-token`), never from the file itself (trapline.credentials).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from trapline.contracts import DEFAULT_PREFIX, DEVICE_ID_PATTERN, Category
from trapline.credentials import SecretError, read_secret
from trapline.edge.backends import BACKENDS
from trapline.edge.ota.config import OtaConfig
from trapline.edge.sources import SourceConfig

PASSWORD_ENV = "TRAPLINE_MQTT_PASSWORD"  # noqa: S105 - a variable name, not a secret
PASSWORD_CREDENTIAL = "mqtt-password"  # noqa: S105 - a file name
UPLOAD_TOKEN_ENV = "TRAPLINE_UPLOAD_TOKEN"  # noqa: S105 - a variable name
UPLOAD_TOKEN_CREDENTIAL = "upload-token"  # noqa: S105 - a file name
PACKAGED_MODELS = Path(__file__).parent / "models"
# the fine-tuned camera-trap model, a signed bundle (see its report.md)
PACKAGED_MODEL = PACKAGED_MODELS / "trapline-nano"
# the COCO stand-in it replaced, kept as the evaluation baseline
COCO_STAND_IN = PACKAGED_MODELS / "yolov8n-coco-int8.tflite"
# the release keys a trap trusts out of the box (`<key id>.pub` files; see trapline/keyring.py)
PACKAGED_KEYRING = PACKAGED_MODELS / "keyring"
# sample photos shipped with the agent: `trapline edge check` and the demo use them
PACKAGED_SAMPLES = Path(__file__).parent / "samples"


# "auto" or a key of the backend registry: the registry is the one list of runtimes
BACKEND_CHOICES = ("auto", *BACKENDS)


def _known_backend(key: str) -> str:
    if key not in BACKEND_CHOICES:
        raise ValueError(f"unknown backend {key!r}: use one of {', '.join(BACKEND_CHOICES)}")
    return key


BackendKey = Annotated[str, AfterValidator(_known_backend)]


class ConfigError(ValueError):
    """The configuration file is missing, unreadable or invalid; the message names the field."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelConfig(_Section):
    path: Path = Field(
        PACKAGED_MODEL, description="a signed bundle directory, or a bare .onnx/.tflite file (development)"
    )
    keyring: Path = Field(
        PACKAGED_KEYRING,
        description="trusted release keys: a folder of <key id>.pub files (or one .pub file);"
        " a bundle loads only if one of them signed it. With keys.rotation (the default) this is"
        " the seed of the keyring the trap keeps in keys.state_dir, which signed statements change",
    )
    backend: BackendKey = Field(
        "auto",
        description="runtime; auto picks the preferred installed one for the file",
        json_schema_extra={"enum": list(BACKEND_CHOICES)},
    )
    threads: int = Field(2, ge=1, le=16, description="inference threads")
    conf_threshold: float | None = Field(
        None, ge=0.0, le=1.0, description="override the model's confidence threshold"
    )
    iou_threshold: float | None = Field(
        None, ge=0.0, le=1.0, description="override the model's NMS IoU threshold"
    )
    fallback_to_packaged: bool = Field(
        True, description="if the model cannot be loaded, run the packaged model instead"
    )


class TlsConfig(_Section):
    ca_file: Path | None = Field(None, description="CA certificate bundle of the broker")
    cert_file: Path | None = Field(None, description="client certificate (mutual TLS)")
    key_file: Path | None = Field(None, description="client private key (mutual TLS)")
    insecure: bool = Field(False, description="skip host name verification (testing only)")

    @model_validator(mode="after")
    def _pair(self) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        return self


class MqttConfig(_Section):
    host: str = Field("localhost", description="broker host name")
    port: int = Field(1883, ge=1, le=65535, description="broker port (8883 for TLS)")
    prefix: str = Field(DEFAULT_PREFIX, pattern=r"^[^#+]+$", description="topic prefix")
    username: str | None = Field(None, description="user name; password from the environment")
    password_file: Path | None = Field(
        None, description="file holding the MQTT password (mode 0600); or TRAPLINE_MQTT_PASSWORD"
    )
    client_id: str | None = Field(None, description="MQTT client id (default trapline-<device>)")
    protocol: Literal[5, 311] = Field(5, description="MQTT protocol version")
    keepalive_s: int = Field(60, ge=5, description="keepalive interval")
    tls: TlsConfig | None = Field(None, description="TLS settings; omit for plain TCP")
    backoff_min_s: int = Field(1, ge=1, description="first reconnect delay")
    backoff_max_s: int = Field(120, ge=1, description="longest reconnect delay")
    stable_after_s: float = Field(
        60,
        gt=0,
        description="the reconnect delay goes back to backoff_min_s only after a link lasted this long",
    )
    auth_retry_s: float = Field(900, gt=0, description="wait after the broker refuses credentials")
    max_inflight: int = Field(100, ge=1, le=65534, description="unacknowledged messages at once")
    will_delay_s: int = Field(
        30,
        ge=0,
        le=2**32 - 1,
        description="MQTT 5: the broker publishes `offline` only after this"
        " long without the trap, so a quick reconnect does not flip its status",
    )
    session_expiry_s: int = Field(
        86400,
        ge=0,
        le=2**32 - 1,
        description="MQTT 5: how long the broker keeps the trap's session"
        " (its commands, the Will's delay) while the trap is away",
    )

    @model_validator(mode="after")
    def _backoff_order(self) -> MqttConfig:
        if self.backoff_min_s > self.backoff_max_s:
            raise ValueError("backoff_min_s must not exceed backoff_max_s")
        return self

    def password(self) -> SecretStr | None:
        return read_secret(PASSWORD_ENV, PASSWORD_CREDENTIAL, self.password_file)


class SpoolConfig(_Section):
    path: Path = Field(Path("/var/lib/trapline/spool.sqlite"), description="spool database file")
    max_bytes: int = Field(512 * 1024 * 1024, gt=0, description="largest total size of unsent messages")
    policy: Literal["drop_oldest", "drop_newest"] = Field(
        "drop_oldest",
        description="when full: drop the oldest (empty frames first) or refuse new messages",
    )
    synchronous: Literal["full", "normal"] = Field(
        "full", description="SQLite fsync level: full survives power loss, normal only crashes"
    )
    dead_letter_max_bytes: int = Field(
        64 * 1024 * 1024,
        gt=0,
        description="messages the broker refused, kept for a look; the oldest go first",
    )
    processed_keep_days: float = Field(
        30, gt=0, description="forget 'frame done' marks after this long, except for files still present"
    )


class CandidateConfig(_Section):
    per_day: int = Field(
        20, ge=0, le=1000, description="below-threshold crops sampled per UTC day for the server (0: none)"
    )
    floor: float = Field(
        0.1, gt=0, lt=1, description="lowest confidence sampled (the model's threshold is the top)"
    )
    max_bytes: int = Field(1024 * 1024, gt=0, description="largest size of one day's sample")
    side_px: int = Field(224, ge=32, le=1024, description="longest side of a sampled crop")
    categories: list[Category] = Field(
        default_factory=lambda: list[Category](["animal"]),
        description="categories whose weak boxes are sampled",
    )


class UploadConfig(_Section):
    url: str | None = Field(None, description="the server's base URL, e.g. https://trapline.example.org")
    mode: Literal["none", "crops", "thumbnails", "frames"] = Field(
        "none", description="what to send for frames with a detection"
    )
    daily_bytes: int = Field(50 * 1024 * 1024, gt=0, description="upload budget per UTC day (slow links)")
    max_queue_bytes: int = Field(
        1024 * 1024 * 1024, gt=0, description="pictures kept while offline; the oldest go first when full"
    )
    thumbnail_px: int = Field(640, ge=64, description="longest side of a thumbnail")
    crop_margin: float = Field(0.15, ge=0, le=1, description="context around a crop, share of the box")
    backoff_max_s: float = Field(300, gt=0, description="longest wait between failed uploads")
    token_file: Path | None = Field(
        None, description="file holding the upload token (mode 0600); or TRAPLINE_UPLOAD_TOKEN"
    )
    candidates: CandidateConfig = Field(
        default_factory=CandidateConfig,
        description="a daily sample of boxes just below the threshold, sent after everything else",
    )

    @model_validator(mode="after")
    def _needs_url(self) -> UploadConfig:
        if self.mode != "none" and not self.url:
            raise ValueError(f"upload mode {self.mode!r} needs a url")
        return self

    def token(self) -> SecretStr | None:
        return read_secret(UPLOAD_TOKEN_ENV, UPLOAD_TOKEN_CREDENTIAL, self.token_file)


class PrivacyConfig(_Section):
    blur_people: bool = Field(
        False,
        description="blur every `person` box before a picture is written for upload (a site's rule:"
        " no identifiable person leaves the trap)",
    )


class SceneConfig(_Section):
    reference: Path | None = Field(
        None, description="photo of the scene as set up (provisioning takes it); None: no tamper check"
    )
    check_interval_s: float = Field(1800, ge=10, description="compare a daytime frame this often")
    shifted_below: float = Field(
        0.35,
        ge=0,
        le=1,
        description="share of the reference's features still in place under which the view moved",
    )
    blocked_below: float = Field(
        0.25, ge=0, le=1, description="detail left (vs the reference) under which the view is blocked"
    )


class KeysConfig(_Section):
    rotation: bool = Field(
        True,
        description="follow the server's signed key rotation statements (cmd/keys): the trap then"
        " trusts the keyring kept in state_dir, seeded from model.keyring at the first start",
    )
    state_dir: Path | None = Field(
        None,
        description="the keyring the trap trusts now and the last statement it applied;"
        " default: a `trust` folder beside the spool (/var/lib/trapline/trust)",
    )


class BurstConfig(_Section):
    gap_s: float = Field(3.0, gt=0, description="frames closer than this share a sequence")
    lone_min_conf: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="a category seen in one frame only of a burst, never at or above this confidence,"
        " is left out of the sequence summary (0 turns smoothing off)",
    )


class PipelineConfig(_Section):
    reduced_decode: bool = Field(
        True,
        description="decode JPEGs at 1/2, 1/4 or 1/8 scale when at least that many times the model input",
    )
    prefetch: bool = Field(True, description="decode the next frame while the current one is in inference")


class AgentConfig(_Section):
    device_id: str = Field(pattern=DEVICE_ID_PATTERN.pattern, description="this trap's id")
    source: SourceConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    spool: SpoolConfig = Field(default_factory=SpoolConfig)
    bursts: BurstConfig = Field(default_factory=BurstConfig)
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig)
    upload: UploadConfig = Field(default_factory=UploadConfig)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)
    scene: SceneConfig = Field(default_factory=SceneConfig)
    ota: OtaConfig = Field(default_factory=OtaConfig)
    keys: KeysConfig = Field(default_factory=KeysConfig)
    quarantine_dir: Path = Field(
        Path("/var/lib/trapline/quarantine"), description="where bad files are moved"
    )
    deployment_file: Path | None = Field(
        None,
        description="the deployment record `trapline provision` wrote; sent to the server until it has it",
    )
    heartbeat_interval_s: float = Field(60.0, gt=0, description="seconds between heartbeats")
    max_image_pixels: int = Field(60_000_000, gt=0, description="larger pictures are refused before decoding")

    @model_validator(mode="after")
    def _username_is_the_device(self) -> AgentConfig:
        # the broker's ACL lets a trap write only under <prefix>/<its user name>/: another name
        # would have every message refused (MQTT 5) or silently dropped (MQTT 3.1.1)
        if self.mqtt.username is not None and self.mqtt.username != self.device_id:
            raise ValueError(
                f"mqtt.username {self.mqtt.username!r} must equal device_id {self.device_id!r}"
                " (the broker lets a trap publish only under its own user name)"
            )
        return self


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "(top level)"
        lines.append(f"  {where}: {item['msg']}")
    return "\n".join(lines)


def load_config(path: Path) -> AgentConfig:
    """Read and validate a YAML config; ConfigError names each bad field."""
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"config {path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"config {path} must be a mapping of settings")
    try:
        config = AgentConfig.model_validate(raw)
        # a secret file the config names must be readable now, not at the first connection
        config.mqtt.password()
        config.upload.token()
    except ValidationError as exc:
        raise ConfigError(f"invalid config {path}:\n{_describe(exc)}") from exc
    except SecretError as exc:
        raise ConfigError(f"invalid config {path}: {exc}") from exc
    return config
