"""`trapline server ...`: migrate, ingest, api, worker, retention, device (add, token, enrol-offline,
decommission), site add, token create, mqtt-auth, and the model updates: release add/grant,
group set, rollout start/pause/resume/rollback, keys publish/status, ota."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from trapline.server.core.config import ServerSettings
    from trapline.server.fleet import IssuedToken

log = logging.getLogger(__name__)


def _settings() -> ServerSettings:
    from trapline.server.core.config import ServerSettings

    return ServerSettings()


def _migrate(_args: argparse.Namespace) -> int:
    from trapline.server.migrate import upgrade

    upgrade(_settings().database_url)
    print("database is at the newest schema")
    return 0


def _ingest(_args: argparse.Namespace) -> int:
    from trapline.server.db import make_engine, session_factory
    from trapline.server.ingest.worker import IngestWorker

    settings = _settings()
    worker = IngestWorker(settings, session_factory(make_engine(settings.database_url)))

    def _stop(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s, stopping ingest", signal.Signals(signum).name)
        worker.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    return worker.run()


def _api(args: argparse.Namespace) -> int:
    from trapline.server.api.main import create_app
    from trapline.server.api.serve import serve

    return serve(create_app(_settings()), host=args.host, port=args.port)


def _retention(_args: argparse.Namespace) -> int:
    from trapline.server.db import make_engine, session_factory
    from trapline.server.retention import apply_retention

    settings = _settings()
    result = apply_retention(settings, session_factory(make_engine(settings.database_url)))
    print(
        f"deleted {result.dead_letters} dead letters, {result.jobs} jobs ({result.job_files} ZIP files), "
        f"{result.media_rows} pictures ({result.media_files} files), {result.sessions} expired sessions"
    )
    return 0


def _worker(args: argparse.Namespace) -> int:
    from trapline.server.jobs import JobQueue

    JobQueue(_settings()).run_worker(workers=args.workers)
    return 0


def _token_line(issued: IssuedToken) -> str:
    expires = f"{issued.expires_at:%Y-%m-%d %H:%M} UTC"
    return f"{issued.device_id}  enrolment token {issued.token}  (expires {expires})"


def _device_ids(args: argparse.Namespace) -> list[str]:
    if args.count is None:
        return [args.device_id]
    return [f"{args.device_id}{n:0{args.digits}d}" for n in range(args.start, args.start + args.count)]


def _device_add(args: argparse.Namespace) -> int:
    """Register traps; print each one's one-time enrolment token (or, with --credentials, the
    MQTT password and upload token directly, for a trap set up by hand)."""
    from trapline.server.admin import give_credentials
    from trapline.server.broker_auth import sync_broker
    from trapline.server.db import make_engine, session_factory, transaction
    from trapline.server.fleet import RegistryError, issue_enrolment_token
    from trapline.server.models import Device

    settings = _settings()
    factory = session_factory(make_engine(settings.database_url))
    try:
        with transaction(factory) as session:
            for device_id in _device_ids(args):
                issued = issue_enrolment_token(session, settings, device_id, args.site)
                device = session.get_one(Device, device_id)  # issue_enrolment_token registered it
                device.name = args.name or device.name
                device.last_seen_at = device.last_seen_at or datetime.now(UTC)
                if not args.credentials:
                    print(_token_line(issued))
                    continue
                given = give_credentials(device)
                print(f"device {device_id} registered. Give the technician, once:")
                print(f"  MQTT user {device_id}, password {given.mqtt_password}")
                print(f"  upload token {given.upload_token}")
    except RegistryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with factory() as session:
        files = sync_broker(session, settings)
    if args.credentials and files is None:
        print("then run `trapline server mqtt-auth` and reload mosquitto")
    return 0


def _device_token(args: argparse.Namespace) -> int:
    from trapline.server.db import make_engine, session_factory, transaction
    from trapline.server.models import Device

    settings = _settings()
    from trapline.server.fleet import issue_enrolment_token

    with transaction(session_factory(make_engine(settings.database_url))) as session:
        if session.get(Device, args.device_id) is None:
            print(f"error: no device {args.device_id!r}", file=sys.stderr)
            return 2
        issued = issue_enrolment_token(session, settings, args.device_id, args.site)
    print(
        f"{args.device_id}  enrolment token {issued.token}  (expires {issued.expires_at:%Y-%m-%d %H:%M} UTC)"
    )
    return 0


def _device_enrol_offline(args: argparse.Namespace) -> int:
    """Enrol a trap here, on the server, and write its answer to a file for a site without network
    (the file holds the trap's secrets: 0600; carry it on the technician's USB stick)."""
    from trapline.enrolment import EnrolmentRequest
    from trapline.files import atomic_write
    from trapline.server.broker_auth import sync_broker
    from trapline.server.db import make_engine, session_factory, transaction
    from trapline.server.fleet import RegistryError, enrol, issue_enrolment_token

    settings = _settings()
    if settings.public_url is None:
        print("error: set TRAPLINE_SERVER_PUBLIC_URL (where traps upload) first", file=sys.stderr)
        return 2
    try:
        with transaction(session_factory(make_engine(settings.database_url))) as session:
            issued = issue_enrolment_token(session, settings, args.device_id, args.site)
            request = EnrolmentRequest(
                token=issued.token,  # type: ignore[arg-type]
                device_id=args.device_id,
                site=args.site,
                agent_version="offline",
            )
            answer = enrol(session, settings, request, settings.public_url)
    except RegistryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with session_factory(make_engine(settings.database_url))() as session:
        sync_broker(session, settings)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(args.out, answer.to_json(), 0o600)
    print(f"wrote {args.out} for {args.device_id} (secrets inside: mode 0600, hand it over, then delete it)")
    print(f"on the trap: trapline provision --offline {args.out.name} --device {args.device_id} ...")
    return 0


def _device_decommission(args: argparse.Namespace) -> int:
    from trapline.server.broker_auth import sync_broker
    from trapline.server.db import make_engine, session_factory, transaction
    from trapline.server.fleet import RegistryError, decommission

    settings = _settings()
    try:
        with transaction(session_factory(make_engine(settings.database_url))) as session:
            decommission(session, settings, args.device_id)
    except RegistryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with session_factory(make_engine(settings.database_url))() as session:
        sync_broker(session, settings)
    print(f"{args.device_id}: deployment ended, credentials revoked (its data stays)")
    return 0


def _site_add(args: argparse.Namespace) -> int:
    from trapline.server.db import make_engine, session_factory, transaction
    from trapline.server.fleet import add_site

    with transaction(session_factory(make_engine(_settings().database_url))) as session:
        site = add_site(session, args.site_id, args.name, args.blur_people)
        blur = "people blurred on the trap" if site.blur_people else "no blurring"
    print(f"site {args.site_id}: {blur}")
    return 0


def _token_create(args: argparse.Namespace) -> int:
    from trapline.server.admin import create_api_token

    print(create_api_token(_sessions(), args.name, args.role))
    return 0


def _mqtt_auth(args: argparse.Namespace) -> int:
    from trapline.server.broker_auth import reload_broker, write_broker_auth
    from trapline.server.db import make_engine, session_factory

    settings = _settings()
    factory = session_factory(make_engine(settings.database_url))
    with factory() as session:
        files = write_broker_auth(session, settings, args.out)
    print(f"wrote {files.passwd} ({files.users} users) and {files.acl}")
    if settings.mosquitto_pid_file is not None and reload_broker(settings.mosquitto_pid_file):
        print("mosquitto reloaded them")
    return 0


def _model_add(args: argparse.Namespace) -> int:
    from trapline.server.admin import register_model

    settings = _settings()
    name, version = register_model(_sessions(), args.bundle, settings.release_keyring)
    print(f"registered {name} v{version}")
    return 0


def _sessions() -> sessionmaker[Session]:
    from trapline.server.db import make_engine, session_factory

    return session_factory(make_engine(_settings().database_url))


def _release_add(args: argparse.Namespace) -> int:
    from trapline.contracts import RollbackGrant
    from trapline.server.db import transaction
    from trapline.server.ota.releases import ReleaseError, register_release

    grant = RollbackGrant.model_validate_json(args.grant.read_bytes()) if args.grant else None
    try:
        with transaction(_sessions()) as session:
            release = register_release(session, _settings(), args.bundle, args.min_agent_version, grant)
            line = (
                f"release {release.id}: {release.name} v{release.version}, {release.size_bytes} bytes,"
                f" sha256 {release.bundle_sha256}, signed by {release.key_id}"
            )
    except ReleaseError as exc:
        print(f"refused: {exc}")
        return 1
    print(line)
    return 0


def _release_grant(args: argparse.Namespace) -> int:
    from trapline.contracts import RollbackGrant
    from trapline.server.db import transaction
    from trapline.server.ota.releases import ReleaseError, add_rollback_grant

    try:
        grant = RollbackGrant.model_validate_json(args.grant.read_bytes())
        with transaction(_sessions()) as session:
            release = add_rollback_grant(session, _settings(), args.release_id, grant)
            line = f"release {release.id} (v{release.version}): traps may now be rolled back to it"
    except (ReleaseError, ValueError) as exc:
        print(f"refused: {exc}")
        return 1
    print(line)
    return 0


def _group_set(args: argparse.Namespace) -> int:
    from trapline.server.db import transaction
    from trapline.server.ota.rollouts import RolloutError, set_group

    try:
        with transaction(_sessions()) as session:
            members = set_group(session, args.name, args.devices)
    except RolloutError as exc:
        print(f"refused: {exc}")
        return 1
    print(f"group {args.name}: {', '.join(members)}")
    return 0


def _rollout(args: argparse.Namespace) -> int:
    from trapline.server.db import transaction
    from trapline.server.ota.rollouts import RolloutError, RolloutPlan, pause, resume, rollback, start_rollout

    now = datetime.now(UTC)
    try:
        with transaction(_sessions()) as session:
            if args.rollout_command == "start":
                plan = RolloutPlan(
                    args.canary, args.percent, args.max_failure_percent, args.success_percent, args.spread_s
                )
                rollout = start_rollout(session, args.release_id, plan, "cli", now)
                line = f"rollout {rollout.id} of release {args.release_id}: {rollout.state}"
            elif args.rollout_command == "pause":
                line = f"rollout {pause(session, args.rollout_id, now).id} paused"
            elif args.rollout_command == "resume":
                line = f"rollout {resume(session, args.rollout_id, now).id} running"
            else:
                result = rollback(session, args.rollout_id, "cli", now)
                line = f"rollout {args.rollout_id} rolled back: {len(result.going_back)} traps go back"
                if result.staying:
                    line += f"; no earlier release for {', '.join(result.staying)} (they keep theirs)"
    except RolloutError as exc:
        print(f"refused: {exc}")
        return 1
    print(line)
    return 0


def _keys_publish(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from trapline.contracts import KeyRotationStatement
    from trapline.key_rotation import describe
    from trapline.server.db import transaction
    from trapline.server.ota.key_rotations import KeyRotationError, register_rotation
    from trapline.server.ota.rollouts import group_members

    try:
        statement = KeyRotationStatement.model_validate_json(args.statement.read_bytes())
    except (OSError, ValidationError) as exc:
        print(f"refused: {args.statement}: not a key rotation statement ({exc})")
        return 1
    try:
        with transaction(_sessions()) as session:
            devices: list[str] | None = list(args.device) if args.device or args.group else None
            for group in args.group:
                members = group_members(session, group)
                if not members:
                    raise KeyRotationError(f"the group {group!r} has no traps")
                devices = [*(devices or []), *members]
            targets = register_rotation(session, _settings(), statement, devices, datetime.now(UTC))
    except KeyRotationError as exc:
        print(f"refused: {exc}")
        return 1
    print(f"{describe(statement)}")
    print(
        f"for {len(targets)} trap(s): `trapline server ota` publishes it;"
        " `trapline server keys status` shows which traps applied it"
    )
    return 0


def _keys_status(_args: argparse.Namespace) -> int:
    from trapline.key_rotation import describe
    from trapline.server.ota.key_rotations import key_status, statement_of

    with _sessions()() as session:
        rotations, devices = key_status(session)
        for row in rotations:
            print(f"{describe(statement_of(row))} (registered {row.registered_at:%Y-%m-%d %H:%M})")
        if not rotations:
            print("no key rotation statement registered")
        for device in devices:
            line = (
                f"{device.device_id}\tshould apply {device.desired_sequence or '-'}"
                f" ({'published' if device.published else 'not yet published'})"
                f"\tapplied {device.applied_sequence if device.applied_sequence is not None else '-'}"
            )
            if device.trusted_keys:
                line += f"\ttrusts {', '.join(device.trusted_keys)}"
            if device.refused_at is not None:
                line += f"\trefused {device.refused_sequence or '-'}: {device.refused_reason}"
            print(line)
    return 0


def _ota(_args: argparse.Namespace) -> int:
    from trapline.server.ota.commands import MqttCommandSender
    from trapline.server.ota.controller import RolloutController

    settings = _settings()
    sender = MqttCommandSender(settings)
    controller = RolloutController(settings, _sessions(), sender)

    def _stop(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s, stopping the rollout controller", signal.Signals(signum).name)
        controller.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    sender.start()
    try:
        controller.run()
    finally:
        sender.stop()
    return 0


def _register_ota(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sub.add_parser(
        "ota", help="run the rollout controller: stages, halts, and each trap's retained model command"
    ).set_defaults(handler=_ota)
    release = sub.add_parser("release", help="model releases for the traps")
    rsub = release.add_subparsers(dest="release_command", required=True)
    add = rsub.add_parser("add", help="register a signed bundle (directory or .tar.gz) as a release")
    add.add_argument("bundle", type=Path)
    add.add_argument("--min-agent-version", help="oldest trap agent that may install it")
    add.add_argument("--grant", type=Path, help="a rollback grant for it (`trapline export rollback-grant`)")
    add.set_defaults(handler=_release_add)
    grant = rsub.add_parser("grant", help="add a rollback grant: traps may then be rolled back to it")
    grant.add_argument("release_id", type=int)
    grant.add_argument("grant", type=Path)
    grant.set_defaults(handler=_release_grant)
    group = sub.add_parser("group", help="named groups of traps (canaries)")
    gsub = group.add_subparsers(dest="group_command", required=True)
    gset = gsub.add_parser("set", help="make a group hold exactly these traps")
    gset.add_argument("name")
    gset.add_argument("devices", nargs="+")
    gset.set_defaults(handler=_group_set)
    rollout = sub.add_parser("rollout", help="send a release out in stages; pause, resume, roll back")
    osub = rollout.add_subparsers(dest="rollout_command", required=True)
    start = osub.add_parser("start", help="the canary group first, then shares of the fleet")
    start.add_argument("release_id", type=int)
    start.add_argument("--canary", help="group told first, alone")
    start.add_argument("--percent", type=int, nargs="*", default=[100], help="shares of the fleet, in stages")
    start.add_argument("--max-failure-percent", type=float, default=10.0, help="halt above this failure rate")
    start.add_argument("--success-percent", type=float, default=100.0, help="needed before the next stage")
    start.add_argument("--spread-s", type=int, default=0, help="spread the downloads over this many seconds")
    start.set_defaults(handler=_rollout)
    keys = sub.add_parser("keys", help="key rotation: send signed statements to the traps, follow them")
    ksub = keys.add_subparsers(dest="keys_command", required=True)
    publish = ksub.add_parser(
        "publish", help="register a statement (`trapline keys rotate`) for every trap, or some of them"
    )
    publish.add_argument("statement", type=Path)
    publish.add_argument("--device", action="append", default=[], help="only this trap (repeatable)")
    publish.add_argument("--group", action="append", default=[], help="only this group's traps (repeatable)")
    publish.set_defaults(handler=_keys_publish)
    ksub.add_parser(
        "status", help="the statements, and which each trap should apply, applied or refused"
    ).set_defaults(handler=_keys_status)
    for action, text in (
        ("pause", "tell no more traps"),
        ("resume", "carry on after a pause or a halt"),
        ("rollback", "send every trap it told back to its earlier release"),
    ):
        command = osub.add_parser(action, help=text)
        command.add_argument("rollout_id", type=int)
        command.set_defaults(handler=_rollout)


def register(server: argparse.ArgumentParser) -> None:
    """`trapline server ...` (settings: TRAPLINE_SERVER_* variables)."""
    sub = server.add_subparsers(dest="server_command", required=True)
    sub.add_parser("migrate", help="create or upgrade the database schema").set_defaults(handler=_migrate)
    sub.add_parser("ingest", help="run an MQTT ingest worker until stopped").set_defaults(handler=_ingest)
    worker = sub.add_parser("worker", help="run background jobs (dataset exports, retention) until stopped")
    worker.add_argument("--workers", type=int, default=1)
    worker.set_defaults(handler=_worker)
    sub.add_parser(
        "retention", help="delete what is older than the retention settings, now (the worker does it hourly)"
    ).set_defaults(handler=_retention)
    api = sub.add_parser("api", help="serve the API and dashboard")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=8000)
    api.set_defaults(handler=_api)
    device = sub.add_parser("device", help="traps").add_subparsers(dest="device_command", required=True)
    add = device.add_parser("add", help="register a trap (or a batch) and print its one-time enrolment token")
    add.add_argument("device_id", help="the id, or with --count the prefix (trap- gives trap-001, ...)")
    add.add_argument("--name")
    add.add_argument("--site", help="the site it will stand at (trapline server site add)")
    add.add_argument("--count", type=int, help="register a batch of this many")
    add.add_argument("--start", type=int, default=1, help="first number of a batch")
    add.add_argument("--digits", type=int, default=3, help="digits of a batch's numbers")
    add.add_argument(
        "--credentials",
        action="store_true",
        help="print the MQTT password and upload token now (a trap set up by hand, no enrolment)",
    )
    add.set_defaults(handler=_device_add)
    tok = device.add_parser("token", help="a new one-time enrolment token for a registered trap")
    tok.add_argument("device_id")
    tok.add_argument("--site")
    tok.set_defaults(handler=_device_token)
    offline = device.add_parser(
        "enrol-offline", help="enrol a trap now and write its answer to a file (a site without network)"
    )
    offline.add_argument("device_id")
    offline.add_argument("--site")
    offline.add_argument("--out", type=Path, required=True, help="the file to carry to the trap")
    offline.set_defaults(handler=_device_enrol_offline)
    gone = device.add_parser("decommission", help="end a trap's deployment and revoke its credentials")
    gone.add_argument("device_id")
    gone.set_defaults(handler=_device_decommission)
    site = sub.add_parser("site", help="sites").add_subparsers(dest="site_command", required=True)
    site_add = site.add_parser("add", help="create or change a site")
    site_add.add_argument("site_id")
    site_add.add_argument("--name")
    site_add.add_argument(
        "--blur-people", action="store_true", help="traps here blur people before uploading any picture"
    )
    site_add.set_defaults(handler=_site_add)
    token = sub.add_parser("token", help="API tokens").add_subparsers(dest="token_command", required=True)
    create = token.add_parser("create", help="a new API token (printed once)")
    create.add_argument("name")
    create.add_argument("--role", choices=["admin", "viewer"], default="viewer")
    create.set_defaults(handler=_token_create)
    model = sub.add_parser("model", help="model versions").add_subparsers(dest="model_command", required=True)
    model_add = model.add_parser("add", help="register a signed bundle (verified) and its metrics")
    model_add.add_argument("bundle", type=Path)
    model_add.set_defaults(handler=_model_add)
    auth = sub.add_parser("mqtt-auth", help="write Mosquitto's password file and ACL")
    auth.add_argument("--out", type=Path, required=True)
    auth.set_defaults(handler=_mqtt_auth)
    _register_ota(sub)
