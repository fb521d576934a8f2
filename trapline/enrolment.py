"""The enrolment contract: what a new trap sends the server over HTTP, and what it gets back.

An admin registers a device and gets a one-time enrolment token. `trapline provision` on the trap
exchanges the token (once, before it expires) at `POST /api/v1/enrol` for everything the trap
needs: its MQTT password, its upload token, the broker's address and the release keyring. The
same answer, written to a file by `trapline server device enrol-offline`, provisions a trap at a
site with no network. After enrolment the trap reports where it stands (`DeploymentReport`, with a
reference photo of the scene) so the server keeps deployment periods per device.

Strict like the MQTT contracts (trapline.contracts): no coercion, bounds that fit the database.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_serializer, model_validator

from trapline.contracts import REASON_MAX, DeviceId, FiniteFloat, Sha256, Text, Timestamp

ENROLMENT_SCHEMA: Final = "trapline.enrolment/1"
DEPLOYMENT_SCHEMA: Final = "trapline.deployment/1"
ENROL_PATH: Final = "/api/v1/enrol"
DEPLOYMENT_REPORT_PATH: Final = "/api/v1/deployments/report"

# Site ids name a place in a park ("ridge-north"): the same boring alphabet as device ids.
SITE_ID_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
SiteId = Annotated[str, Field(pattern=SITE_ID_PATTERN)]
KeyId = Annotated[str, Field(pattern=r"^[0-9a-f]{16}$")]
PublicKeyPem = Annotated[str, Field(min_length=40, max_length=2000)]


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, populate_by_name=True)

    def to_json(self) -> bytes:
        return self.model_dump_json(by_alias=True).encode()


class EnrolmentRequest(_Wire):
    """The trap asks, once, with the token the admin gave the technician."""

    token: SecretStr = Field(min_length=16, max_length=200)
    device_id: DeviceId
    site: SiteId | None = Field(None, description="the site the trap is set up at (default: the registry's)")
    agent_version: Text = Field(max_length=40)

    @field_serializer("token", when_used="json")
    def _reveal(self, token: SecretStr) -> str:
        return token.get_secret_value()  # this message exists to carry it


class MqttAccess(_Wire):
    host: Text = Field(min_length=1, max_length=253)
    port: int = Field(ge=1, le=65535)
    tls: bool
    ca_pem: Text | None = Field(None, max_length=100_000, description="the broker's CA, when not public")
    prefix: Text = Field(min_length=1, max_length=100, pattern=r"^[^#+]+$")
    username: DeviceId
    password: SecretStr = Field(min_length=16, max_length=200)

    @field_serializer("password", when_used="json")
    def _reveal(self, password: SecretStr) -> str:
        return password.get_secret_value()


class UploadAccess(_Wire):
    url: Text = Field(min_length=1, max_length=500, pattern=r"^https?://")
    token: SecretStr = Field(min_length=16, max_length=200)

    @field_serializer("token", when_used="json")
    def _reveal(self, token: SecretStr) -> str:
        return token.get_secret_value()


class SiteSettings(_Wire):
    """Rules of the site that the trap applies itself."""

    id: SiteId
    name: Text | None = Field(None, max_length=200)
    blur_people: bool = Field(description="blur boxes of class `person` before any picture leaves the trap")


class EnrolmentResponse(_Wire):
    """Everything a trap needs to join the fleet. Holds secrets: written only to 0600 files."""

    schema_: Literal["trapline.enrolment/1"] = Field(ENROLMENT_SCHEMA, alias="schema")
    device_id: DeviceId
    issued_at: Timestamp
    mqtt: MqttAccess
    upload: UploadAccess
    keyring: dict[KeyId, PublicKeyPem] = Field(min_length=1, max_length=32)
    site: SiteSettings | None = None

    @model_validator(mode="after")
    def _user_is_device(self) -> EnrolmentResponse:
        # the broker ACL keys a trap's topics on its user name (see server/security.py)
        if self.mqtt.username != self.device_id:
            raise ValueError("the MQTT user name must be the device id")
        return self


class DeploymentReport(_Wire):
    """Where and how a trap was set up (Camtrap DP deployment fields); sent with the trap's
    upload token, and again until the server has it (a trap provisioned offline sends it later)."""

    schema_: Literal["trapline.deployment/1"] = Field(DEPLOYMENT_SCHEMA, alias="schema")
    device_id: DeviceId
    site: SiteId | None = None
    location_name: Text | None = Field(None, max_length=200)
    latitude: FiniteFloat = Field(ge=-90, le=90)
    longitude: FiniteFloat = Field(ge=-180, le=180)
    camera_height_m: FiniteFloat | None = Field(None, ge=0, le=100)
    camera_heading_deg: FiniteFloat | None = Field(None, ge=0, lt=360, description="0 = north, clockwise")
    camera_tilt_deg: FiniteFloat | None = Field(None, ge=-90, le=90, description="0 = level, -90 = down")
    started_at: Timestamp
    reference_photo_sha256: Sha256 | None = None
    setup_by: Text | None = Field(None, max_length=100)
    comments: Text | None = Field(None, max_length=REASON_MAX)
