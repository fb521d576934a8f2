"""`trapline edge run | check | dead-letters`: what a trap runs (imports nothing of the server or
trainer)."""

from __future__ import annotations

import argparse
import logging
import signal
from pathlib import Path
from types import FrameType

log = logging.getLogger(__name__)

EX_CONFIG = 78  # systemd shows it, and the unit does not loop on a broken config


def _run(args: argparse.Namespace) -> int:
    from trapline.edge.agent import Agent
    from trapline.edge.backends import ModelLoadError
    from trapline.edge.config import ConfigError, load_config

    try:
        config = load_config(args.config)
        agent = Agent(config)
    except (ConfigError, ModelLoadError) as exc:
        log.error("%s", exc)
        return EX_CONFIG

    def _stop(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        agent.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    return agent.run()


def _check(args: argparse.Namespace) -> int:
    from trapline.edge.check import run_check

    return run_check(args.config, args.image)


def _dead_letters(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from trapline.edge.config import ConfigError, load_config
    from trapline.edge.spool import DetectionSpool, SpoolError

    try:
        config = load_config(args.config)
        spool = DetectionSpool(config.spool.path, config.spool.max_bytes, config.spool.policy)
    except (ConfigError, SpoolError) as exc:
        log.error("%s", exc)
        return EX_CONFIG
    try:
        if args.requeue:
            count = spool.requeue_dead_letters()
            print(f"{count} dead letter(s) back in the queue: start the agent to send them")
            return 0
        letters = spool.dead_letters(limit=args.limit)
        for letter in letters:
            at = datetime.fromtimestamp(letter.at, UTC).isoformat(timespec="seconds")
            print(f"{letter.id}\t{at}\t{letter.topic}\t{letter.reason}")
        print(f"{spool.dead_letter_count} dead letter(s) in {config.spool.path}")
        return 0
    finally:
        spool.close()


def register(edge: argparse.ArgumentParser) -> None:
    sub = edge.add_subparsers(dest="edge_command", required=True)
    run = sub.add_parser("run", help="run the agent until stopped (systemd runs this)")
    run.add_argument("--config", type=Path, required=True, help="agent config (YAML)")
    run.set_defaults(handler=_run)
    check = sub.add_parser("check", help="load config and model, run one frame, print detections and latency")
    check.add_argument("--config", type=Path, required=True, help="agent config (YAML)")
    check.add_argument("--image", type=Path, help="picture to run (default: a packaged sample)")
    check.set_defaults(handler=_check)
    dead = sub.add_parser(
        "dead-letters",
        help="list the messages the broker refused (kept in the spool), or put them back in the queue",
    )
    dead.add_argument("--config", type=Path, required=True, help="agent config (YAML)")
    dead.add_argument(
        "--requeue",
        action="store_true",
        help="send them again once the cause (the broker's ACL, the device id) is fixed;"
        " stop the agent first (systemctl stop trapline-edge)",
    )
    dead.add_argument("--limit", type=int, default=100, help="list at most this many")
    dead.set_defaults(handler=_dead_letters)
