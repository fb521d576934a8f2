"""`trapline server ...`: migrate, ingest, api, worker, device add, token create, mqtt-auth, and the
model updates: release add/grant, group set, rollout start/pause/resume/rollback, ota."""

from __future__ import annotations

import argparse
import logging
import signal
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from trapline.server.core.config import ServerSettings

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
    worker.run()
    return 0


def _api(args: argparse.Namespace) -> int:
    import uvicorn

    from trapline.server.api.main import create_app

    uvicorn.run(create_app(_settings()), host=args.host, port=args.port, log_level="warning")
    return 0


def _worker(args: argparse.Namespace) -> int:
    from trapline.server.jobs import JobQueue

    JobQueue(_settings()).run_worker(workers=args.workers)
    return 0


def _device_add(args: argparse.Namespace) -> int:
    from trapline.server.db import make_engine, session_factory, transaction
    from trapline.server.models import Device
    from trapline.server.security import hash_token, mosquitto_password_line, new_token

    upload_token, mqtt_password = new_token(), new_token()
    factory = session_factory(make_engine(_settings().database_url))
    with transaction(factory) as session:
        device = session.get(Device, args.device_id) or Device(id=args.device_id, state="unknown")
        device.name = args.name or device.name
        device.token_hash = hash_token(upload_token)
        device.mqtt_password_line = mosquitto_password_line(args.device_id, mqtt_password)
        device.last_seen_at = device.last_seen_at or datetime.now(UTC)
        session.add(device)
    print(f"device {args.device_id} registered. Give the technician, once:")
    print(f"  MQTT user {args.device_id}, password {mqtt_password}")
    print(f"  upload token {upload_token}")
    print("then run `trapline server mqtt-auth` and reload mosquitto")
    return 0


def _token_create(args: argparse.Namespace) -> int:
    from trapline.server.db import make_engine, session_factory, transaction
    from trapline.server.models import ApiToken
    from trapline.server.security import hash_token, new_token

    token = new_token()
    with transaction(session_factory(make_engine(_settings().database_url))) as session:
        session.add(
            ApiToken(
                name=args.name, token_hash=hash_token(token), role=args.role, created_at=datetime.now(UTC)
            )
        )
    print(token)
    return 0


def _mqtt_auth(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from trapline.credentials import reveal
    from trapline.server.db import make_engine, session_factory
    from trapline.server.models import Device
    from trapline.server.security import mosquitto_acl, mosquitto_password_line

    settings = _settings()
    factory = session_factory(make_engine(settings.database_url))
    with factory() as session:
        lines = [d.mqtt_password_line for d in session.scalars(select(Device)) if d.mqtt_password_line]
    server_password = reveal(settings.mqtt_password) or ""
    if settings.mqtt_username:
        lines.insert(0, mosquitto_password_line(settings.mqtt_username, server_password))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "passwd").write_text("\n".join(lines) + "\n")
    (args.out / "passwd").chmod(0o600)
    server_users = [settings.mqtt_username] if settings.mqtt_username else []
    (args.out / "acl").write_text(mosquitto_acl(settings.mqtt_prefix, server_users))
    print(f"wrote {args.out / 'passwd'} ({len(lines)} users) and {args.out / 'acl'}")
    return 0


def _model_add(args: argparse.Namespace) -> int:
    from trapline.server.db import make_engine, session_factory, transaction
    from trapline.server.model_registry import register_bundle

    settings = _settings()
    with transaction(session_factory(make_engine(settings.database_url))) as session:
        row = register_bundle(session, args.bundle, settings.release_keyring)
        name, version = row.name, row.version
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
    worker = sub.add_parser("worker", help="run background jobs (dataset exports) until stopped")
    worker.add_argument("--workers", type=int, default=1)
    worker.set_defaults(handler=_worker)
    api = sub.add_parser("api", help="serve the API and dashboard")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=8000)
    api.set_defaults(handler=_api)
    device = sub.add_parser("device", help="traps").add_subparsers(dest="device_command", required=True)
    add = device.add_parser("add", help="register a trap: MQTT password and upload token")
    add.add_argument("device_id")
    add.add_argument("--name")
    add.set_defaults(handler=_device_add)
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
