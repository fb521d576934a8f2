"""What `trapline provision` writes on a trap: every file, its content, mode and owner.

Built from the enrolment answer (trapline/enrolment.py) and the technician's options. Nothing
here touches the disk; files.py applies the plan.

On the trap:
    /etc/trapline/agent.yaml          the agent's config (0640 root:trapline; names the secret files)
    /etc/trapline/mqtt-password       the trap's MQTT password (0600 trapline)
    /etc/trapline/upload-token        its upload token (0600 trapline)
    /etc/trapline/keyring/<id>.pub    the release keys it trusts
    /etc/trapline/mqtt-ca.pem         the broker's CA, when the fleet has its own
    /etc/trapline/enrolment.json      the enrolment answer without its secrets (re-runs reuse it)
    /var/lib/trapline/                the agent's state (0750 trapline): spool, quarantine,
                                      deployment.json, reference.jpg
    /etc/systemd/system/trapline-edge.service and its multi-user.target.wants link
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import SecretStr

from trapline.edge.provisioning.files import Entry, Owner, PlannedDir, PlannedFile, PlannedLink
from trapline.enrolment import DeploymentReport, EnrolmentResponse, MqttAccess, SiteSettings, UploadAccess

ETC = Path("/etc/trapline")
CONFIG = ETC / "agent.yaml"
MQTT_PASSWORD = ETC / "mqtt-password"
UPLOAD_TOKEN = ETC / "upload-token"
KEYRING = ETC / "keyring"
MQTT_CA = ETC / "mqtt-ca.pem"
ENROLMENT_RECORD = ETC / "enrolment.json"
STATE = Path("/var/lib/trapline")
DEPLOYMENT = STATE / "deployment.json"
REFERENCE = STATE / "reference.jpg"
UNIT_NAME = "trapline-edge.service"
UNIT = Path("/etc/systemd/system") / UNIT_NAME
WANTS = Path("/etc/systemd/system/multi-user.target.wants") / UNIT_NAME
PACKAGED_UNIT = Path(__file__).resolve().parent.parent / "units" / UNIT_NAME
DEFAULT_VENV = Path("/opt/trapline/venv")
DEFAULT_USER = "trapline"
SYSTEM_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


@dataclass(frozen=True)
class TrapSetup:
    """The technician's choices (the command's options)."""

    device_id: str
    source: dict[str, Any]  # the agent config's `source` section
    upload_mode: str = "crops"
    user: str = DEFAULT_USER
    venv: Path = DEFAULT_VENV


def public_record(answer: EnrolmentResponse) -> bytes:
    """The answer without its secrets: what a second run needs to write the same files again."""
    body = answer.model_dump(mode="json", by_alias=True, exclude={"keyring": True})
    body["mqtt"].pop("password")
    body["upload"].pop("token")
    return (json.dumps(body, indent=1, sort_keys=True) + "\n").encode()


def answer_from_record(
    record: bytes, mqtt_password: str, upload_token: str, keyring: dict[str, str]
) -> EnrolmentResponse:
    """The enrolment answer again, from the files a first run left (no second enrolment)."""
    body = json.loads(record)
    return EnrolmentResponse(
        device_id=body["device_id"],
        issued_at=datetime.fromisoformat(body["issued_at"]),
        mqtt=MqttAccess(**body["mqtt"], password=SecretStr(mqtt_password)),
        upload=UploadAccess(url=body["upload"]["url"], token=SecretStr(upload_token)),
        keyring=keyring,
        site=SiteSettings(**body["site"]) if body.get("site") else None,
    )


def agent_config(setup: TrapSetup, answer: EnrolmentResponse, with_reference: bool) -> dict[str, Any]:
    mqtt: dict[str, Any] = {
        "host": answer.mqtt.host,
        "port": answer.mqtt.port,
        "prefix": answer.mqtt.prefix,
        "username": answer.mqtt.username,
        "password_file": str(MQTT_PASSWORD),
    }
    if answer.mqtt.tls:
        mqtt["tls"] = {"ca_file": str(MQTT_CA if answer.mqtt.ca_pem else SYSTEM_CA_BUNDLE)}
    return {
        "device_id": setup.device_id,
        "source": setup.source,
        "model": {"keyring": str(KEYRING)},
        "mqtt": mqtt,
        "spool": {"path": str(STATE / "spool.sqlite")},
        "upload": {"url": answer.upload.url, "mode": setup.upload_mode, "token_file": str(UPLOAD_TOKEN)},
        "privacy": {"blur_people": bool(answer.site and answer.site.blur_people)},
        "scene": {"reference": str(REFERENCE)} if with_reference else {},
        "deployment_file": str(DEPLOYMENT),
        "quarantine_dir": str(STATE / "quarantine"),
    }


def render_config(config: dict[str, Any], answer: EnrolmentResponse) -> bytes:
    site = f", site {answer.site.id}" if answer.site else ""
    header = (
        f"# Trapline agent {config['device_id']}{site}: written by `trapline provision` (run it again"
        " rather than editing;\n# a second run with the same options changes nothing). Secrets are in"
        " the files named below, never here.\n"
    )
    return (header + yaml.safe_dump(config, sort_keys=False)).encode()


def render_unit(setup: TrapSetup) -> bytes:
    text = PACKAGED_UNIT.read_text()
    text = text.replace(str(DEFAULT_VENV), str(setup.venv))
    if setup.user != DEFAULT_USER:
        text = text.replace(
            f"User={DEFAULT_USER}\nGroup={DEFAULT_USER}", f"User={setup.user}\nGroup={setup.user}"
        )
    return text.encode()


def plan(
    setup: TrapSetup,
    answer: EnrolmentResponse,
    deployment: DeploymentReport | None,
    reference_photo: bytes | None,
) -> list[Entry]:
    agent = Owner(setup.user, setup.user)
    config_owner = Owner("root", setup.user)  # the agent reads it, only root changes it
    entries: list[Entry] = [
        PlannedDir(ETC, 0o755),
        PlannedDir(KEYRING, 0o755),
        PlannedDir(STATE, 0o750, agent),
        PlannedDir(STATE / "quarantine", 0o750, agent),
    ]
    if setup.source.get("type") == "folder":
        entries.append(PlannedDir(Path(setup.source["path"]), 0o750, agent))
    config = agent_config(setup, answer, reference_photo is not None)
    entries += [
        PlannedFile(CONFIG, render_config(config, answer), 0o640, config_owner),
        PlannedFile(MQTT_PASSWORD, answer.mqtt.password.get_secret_value().encode(), 0o600, agent, True),
        PlannedFile(UPLOAD_TOKEN, answer.upload.token.get_secret_value().encode(), 0o600, agent, True),
        PlannedFile(ENROLMENT_RECORD, public_record(answer), 0o644),
    ]
    entries += [
        PlannedFile(KEYRING / f"{key}.pub", pem.encode(), 0o644)
        for key, pem in sorted(answer.keyring.items())
    ]
    if answer.mqtt.ca_pem:
        entries.append(PlannedFile(MQTT_CA, answer.mqtt.ca_pem.encode(), 0o644))
    if deployment is not None:
        body = (json.dumps(json.loads(deployment.to_json()), indent=1) + "\n").encode()
        entries.append(PlannedFile(DEPLOYMENT, body, 0o640, agent))
    if reference_photo is not None:
        entries.append(PlannedFile(REFERENCE, reference_photo, 0o640, agent))
    entries += [PlannedFile(UNIT, render_unit(setup), 0o644), PlannedLink(WANTS, str(UNIT))]
    return entries
