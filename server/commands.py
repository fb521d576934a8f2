"""`trapline server ...`: migrate, ingest, api, worker, retention, device add, token create, mqtt-auth."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
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


def _sessions(settings: ServerSettings) -> sessionmaker[Session]:
    from trapline.server.db import make_engine, session_factory

    return session_factory(make_engine(settings.database_url))


def _device_add(args: argparse.Namespace) -> int:
    from trapline.server.admin import register_device

    try:
        credentials = register_device(_sessions(_settings()), args.device_id, args.name)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(f"device {credentials.device_id} registered. Give the technician, once:")
    print(f"  MQTT user {credentials.device_id}, password {credentials.mqtt_password}")
    print(f"  upload token {credentials.upload_token}")
    print("then run `trapline server mqtt-auth` and reload mosquitto")
    return 0


def _token_create(args: argparse.Namespace) -> int:
    from trapline.server.admin import create_api_token

    print(create_api_token(_sessions(_settings()), args.name, args.role))
    return 0


def _mqtt_auth(args: argparse.Namespace) -> int:
    from trapline.server.admin import write_broker_auth

    settings = _settings()
    users = write_broker_auth(_sessions(settings), settings, args.out)
    print(f"wrote {args.out / 'passwd'} ({users} users) and {args.out / 'acl'}")
    return 0


def _model_add(args: argparse.Namespace) -> int:
    from trapline.server.admin import register_model

    settings = _settings()
    name, version = register_model(_sessions(settings), args.bundle, settings.release_keyring)
    print(f"registered {name} v{version}")
    return 0


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
