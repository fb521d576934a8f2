"""`trapline provision`: turn a fresh 64-bit Raspberry Pi OS into a trap, in one command.

    sudo trapline provision --device trap-07 --site ridge-north --server https://fleet.example.org \\
        --token <enrolment token> --lat -41.29 --lon 174.78 --height 0.8 --heading 135

Enrols with the server (or reads `--offline FILE`, made by `trapline server device enrol-offline`),
writes the agent's config, secrets and keyring, records the deployment with a reference photo,
installs and enables the systemd unit, and runs `trapline edge check`. A second run with the same
options changes nothing (it reuses the first enrolment: tokens work once). Runs on the trap:
imports nothing of the server.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import subprocess
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import SecretStr, ValidationError

from trapline.edge import __version__
from trapline.edge.provisioning import plan as layout
from trapline.edge.provisioning.files import Entry, PlannedFile, apply_entry, describe, on_root
from trapline.enrolment import ENROL_PATH, DeploymentReport, EnrolmentRequest, EnrolmentResponse

log = logging.getLogger(__name__)

TOKEN_ENV = "TRAPLINE_ENROLMENT_TOKEN"  # noqa: S105 - a variable name


class ProvisionError(RuntimeError):
    """Provisioning cannot go on; the message says what to do."""


# --- the enrolment answer -----------------------------------------------------------------------
def stored_answer(root: Path, device_id: str) -> EnrolmentResponse | None:
    """The answer a previous run saved, when it is for this device and its secrets are there."""
    record = on_root(root, layout.ENROLMENT_RECORD)
    try:
        body = record.read_bytes()
        if json.loads(body).get("device_id") != device_id:
            return None
        password = on_root(root, layout.MQTT_PASSWORD).read_text()
        token = on_root(root, layout.UPLOAD_TOKEN).read_text()
        keyring = {p.stem: p.read_text() for p in sorted(on_root(root, layout.KEYRING).glob("*.pub"))}
        return layout.answer_from_record(body, password, token, keyring)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def enrol_online(server: str, token: str, device_id: str, site: str | None) -> EnrolmentResponse:
    request = EnrolmentRequest(
        token=SecretStr(token), device_id=device_id, site=site, agent_version=__version__
    )
    http = urllib.request.Request(  # noqa: S310 - the server the technician named
        server.rstrip("/") + ENROL_PATH,
        data=request.to_json(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(http, timeout=60) as response:  # noqa: S310
            return EnrolmentResponse.model_validate_json(response.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read()[:500].decode(errors="replace")
        raise ProvisionError(f"the server refused the enrolment (HTTP {exc.code}): {detail}") from exc
    except OSError as exc:
        raise ProvisionError(
            f"cannot reach {server} ({exc}); at a site without network use --offline FILE"
        ) from exc
    except ValidationError as exc:
        raise ProvisionError(f"the server's answer is not an enrolment: {exc}") from exc


def offline_answer(path: Path, device_id: str) -> EnrolmentResponse:
    try:
        answer = EnrolmentResponse.model_validate_json(path.read_bytes())
    except (OSError, ValidationError) as exc:
        raise ProvisionError(f"{path} is not an enrolment file: {exc}") from exc
    if answer.device_id != device_id:
        raise ProvisionError(f"{path} is for device {answer.device_id}, not {device_id}")
    return answer


# --- deployment and reference photo ---------------------------------------------------------------
def _existing_deployment(root: Path) -> DeploymentReport | None:
    try:
        return DeploymentReport.model_validate_json(on_root(root, layout.DEPLOYMENT).read_bytes())
    except (OSError, ValidationError):
        return None


def deployment_report(
    args: argparse.Namespace, root: Path, answer: EnrolmentResponse, photo: bytes | None
) -> DeploymentReport | None:
    """The deployment to record. A re-run keeps the start of the current deployment (same
    place, same period) unless --new-deployment says the trap was moved."""
    existing = None if args.new_deployment else _existing_deployment(root)
    if existing is not None and existing.device_id != args.device:
        existing = None
    if args.lat is None or args.lon is None:
        if existing is None:
            log.warning("no --lat/--lon: the deployment is not recorded (Camtrap DP needs it)")
        return existing
    started = args.started_at or (
        existing.started_at if existing else datetime.now(UTC).replace(microsecond=0)
    )
    return DeploymentReport(
        device_id=args.device,
        site=answer.site.id if answer.site else args.site,
        location_name=args.location_name,
        latitude=args.lat,
        longitude=args.lon,
        camera_height_m=args.height,
        camera_heading_deg=args.heading,
        camera_tilt_deg=args.tilt,
        started_at=started,
        reference_photo_sha256=hashlib.sha256(photo).hexdigest() if photo is not None else None,
        setup_by=args.setup_by,
        comments=args.comments,
    )


def _privacy_cover(photo: bytes) -> bytes:
    """The site blurs people: cover them in the reference photo too (it is uploaded)."""
    from trapline.edge.agent import AgentCounters, load_detector
    from trapline.edge.config import AgentConfig
    from trapline.edge.imaging import decode_image
    from trapline.edge.pictures import blur_boxes, encode_jpeg

    config = AgentConfig.model_validate({"device_id": "provision", "source": {"type": "folder", "path": "/"}})
    image = decode_image(photo, config.max_image_pixels)
    detections = load_detector(config, AgentCounters()).detect(image).detections
    if not any(d.category == "person" for d in detections):
        return photo
    return encode_jpeg(blur_boxes(image, detections), quality=92)


def reference_photo(args: argparse.Namespace, root: Path, blur_people: bool) -> bytes | None:
    if args.reference_photo is not None:
        try:
            photo = args.reference_photo.read_bytes()
        except OSError as exc:
            raise ProvisionError(f"cannot read the reference photo: {exc}") from exc
        if photo[:3] != b"\xff\xd8\xff":
            raise ProvisionError(f"{args.reference_photo} is not a JPEG")
        return _privacy_cover(photo) if blur_people else photo
    try:  # a re-run keeps the photo of the scene as it was set up
        return on_root(root, layout.REFERENCE).read_bytes()
    except OSError:
        log.warning("no --reference-photo: the trap cannot tell a moved or covered camera")
        return None


# --- the source section -----------------------------------------------------------------------------
def source_section(camera: str) -> dict[str, Any]:
    kind, _, where = camera.partition(":")
    if kind == "picamera" and not where:
        return {"type": "picamera"}
    if kind == "folder" and where:
        return {"type": "folder", "path": where}
    if kind == "opencv":
        return {"type": "opencv", "device": int(where) if where.isdigit() else (where or 0)}
    raise ProvisionError(f"--camera {camera!r}: use picamera, folder:/path or opencv:<index or URL>")


# --- on the real system ---------------------------------------------------------------------------
def _system(*command: str) -> None:
    log.info("running %s", " ".join(command))
    subprocess.run(command, check=True)


def ensure_user(user: str) -> None:
    """The agent's system user, in group video (the camera)."""
    try:
        subprocess.run(["id", user], check=True, capture_output=True)
    except subprocess.CalledProcessError:
        _system("useradd", "--system", "--home-dir", str(layout.STATE), "--shell", "/usr/sbin/nologin", user)
    if subprocess.run(["getent", "group", "video"], capture_output=True, check=False).returncode == 0:
        _system("usermod", "-aG", "video", user)


def start_service(changed: bool) -> None:
    _system("systemctl", "daemon-reload")
    _system("systemctl", "enable", layout.UNIT_NAME)
    # restarted only when something changed: a second run leaves a running trap alone
    _system("systemctl", "restart" if changed else "start", layout.UNIT_NAME)


# --- checking what was written ---------------------------------------------------------------------
_PATH_KEYS = (
    ("model", "keyring"),
    ("mqtt", "password_file"),
    ("upload", "token_file"),
    ("spool", "path"),
    ("scene", "reference"),
    ("deployment_file",),
    ("quarantine_dir",),
)


def _rerooted(config: dict[str, Any], root: Path) -> dict[str, Any]:
    """The config with its files read under --root (where the check must find them)."""
    for keys in _PATH_KEYS:
        parent = config
        for key in keys[:-1]:
            parent = parent.get(key, {})
        if isinstance(parent, dict) and isinstance(parent.get(keys[-1]), str):
            parent[keys[-1]] = str(on_root(root, Path(parent[keys[-1]])))
    tls = config.get("mqtt", {}).get("tls")
    if tls and str(tls.get("ca_file", "")).startswith(str(layout.ETC)):
        tls["ca_file"] = str(on_root(root, Path(tls["ca_file"])))
    return config


def check_written(root: Path, image: Path | None) -> int:
    from trapline.edge.check import check_config
    from trapline.edge.config import AgentConfig, ConfigError

    path = on_root(root, layout.CONFIG)
    try:
        config = AgentConfig.model_validate(_rerooted(yaml.safe_load(path.read_text()), root))
        config.mqtt.password()
        config.upload.token()
    except (OSError, ValidationError, ConfigError) as exc:
        print(f"FAIL: the written config does not load: {exc}")
        return 1
    return check_config(config, str(path), image)


# --- the command -----------------------------------------------------------------------------------
def provision(args: argparse.Namespace) -> int:
    started = time.monotonic()
    root: Path = args.root.resolve()
    real_system = root == Path("/")
    if real_system and os.geteuid() != 0 and not args.dry_run:
        raise ProvisionError("run as root (sudo), or try it first with --root DIR or --dry-run")
    answer = None if args.reenrol else stored_answer(root, args.device)
    if answer is not None:
        print(f"enrolment: {args.device} is already enrolled here (reusing it; --reenrol for a new one)")
    elif args.offline is not None:
        answer = offline_answer(args.offline, args.device)
        print(f"enrolment: from {args.offline}")
    elif args.dry_run:
        raise ProvisionError(
            "--dry-run cannot enrol (a token works once): give --offline FILE, or run for real"
        )
    else:
        token = args.token or os.environ.get(TOKEN_ENV)
        if not args.server or not token:
            raise ProvisionError(f"give --server and --token (or {TOKEN_ENV}), or --offline FILE")
        answer = enrol_online(args.server, token, args.device, args.site)
        print(f"enrolment: {args.device} enrolled with {args.server}")
    blur = bool(answer.site and answer.site.blur_people)
    photo = reference_photo(args, root, blur)
    deployment = deployment_report(args, root, answer, photo)
    setup = layout.TrapSetup(
        device_id=args.device,
        source=source_section(args.camera),
        upload_mode=args.upload_mode,
        user=args.user,
        venv=args.venv,
    )
    entries: list[Entry] = layout.plan(setup, answer, deployment, photo)
    if args.dry_run:
        print(f"would write under {root}:")
        for entry in entries:
            print(f"  {describe(entry)}")
        config = next(e for e in entries if isinstance(e, PlannedFile) and e.path == layout.CONFIG)
        print(f"\n{layout.CONFIG}:\n{config.content.decode()}")
        return 0
    if real_system:
        ensure_user(args.user)
    changed = [entry for entry in entries if apply_entry(root, entry)]
    for entry in changed:
        print(f"wrote {describe(entry)}")
    if not changed:
        print("nothing changed: the trap is provisioned as asked")
    if real_system:
        start_service(bool(changed))
    status = 0
    if deployment is not None:
        status = _report_deployment(root, answer, deployment)
    if not args.no_check:
        status = check_written(root, args.check_image) or status
    print(f"provisioned {args.device} in {time.monotonic() - started:.1f} s")
    return status


def _report_deployment(root: Path, answer: EnrolmentResponse, deployment: DeploymentReport) -> int:
    from trapline.edge.deployment import is_sent, send_deployment

    record = on_root(root, layout.DEPLOYMENT)
    if is_sent(record):
        print("deployment: already recorded on the server")
        return 0
    photo = on_root(root, layout.REFERENCE) if deployment.reference_photo_sha256 else None
    status = send_deployment(answer.upload.url, answer.upload.token.get_secret_value(), record, photo, 30)
    if status == 200:
        print(f"deployment: recorded on the server (started {deployment.started_at.isoformat()})")
        return 0
    if status == 0:
        print("deployment: the server is not reachable; the agent sends it when the trap is online")
        return 0
    print(f"deployment: FAIL, the server refused it (HTTP {status})")
    return 1


def _run(args: argparse.Namespace) -> int:
    try:
        return provision(args)
    except ProvisionError as exc:
        print(f"FAIL: {exc}")
        return 2


def _timestamp(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise argparse.ArgumentTypeError("give a timezone, e.g. 2026-11-30T07:00:00+13:00")
    return parsed


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", required=True, help="this trap's id, as registered on the server")
    parser.add_argument("--server", help="the fleet server's URL (online enrolment)")
    parser.add_argument("--token", help=f"the one-time enrolment token (or {TOKEN_ENV})")
    parser.add_argument(
        "--offline", type=Path, help="enrolment file from `trapline server device enrol-offline`"
    )
    parser.add_argument("--site", help="the site (default: the one the server registered)")
    where = parser.add_argument_group("the deployment (Camtrap DP)")
    where.add_argument("--lat", type=float, help="latitude, decimal degrees (WGS84)")
    where.add_argument("--lon", type=float, help="longitude, decimal degrees (WGS84)")
    where.add_argument("--height", type=float, help="camera height above ground, m")
    where.add_argument("--heading", type=float, help="camera direction, degrees from north, clockwise")
    where.add_argument("--tilt", type=float, help="camera tilt, degrees (0 level, -90 straight down)")
    where.add_argument("--location-name", help="a name for the spot")
    where.add_argument("--setup-by", help="who set the trap up")
    where.add_argument("--comments")
    where.add_argument("--started-at", type=_timestamp, help="deployment start (default: now)")
    where.add_argument(
        "--new-deployment", action="store_true", help="the trap was moved: start a new deployment"
    )
    where.add_argument("--reference-photo", type=Path, help="a JPEG of the scene from the trap's camera")
    parser.add_argument(
        "--camera", default="picamera", help="picamera (default), folder:/path, opencv:<index|URL>"
    )
    parser.add_argument("--upload-mode", default="crops", choices=["none", "crops", "thumbnails", "frames"])
    parser.add_argument("--user", default=layout.DEFAULT_USER, help="the agent's system user")
    parser.add_argument("--venv", type=Path, default=layout.DEFAULT_VENV, help="where trapline is installed")
    parser.add_argument("--root", type=Path, default=Path("/"), help="install into this folder instead of /")
    parser.add_argument(
        "--dry-run", action="store_true", help="print every file it would write; change nothing"
    )
    parser.add_argument("--reenrol", action="store_true", help="enrol again even if this trap is enrolled")
    parser.add_argument("--no-check", action="store_true", help="skip `trapline edge check` at the end")
    parser.add_argument("--check-image", type=Path, help="picture for the check (default: a packaged sample)")
    parser.set_defaults(handler=_run)
