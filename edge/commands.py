"""`trapline edge run | check`: what a trap runs (imports nothing of the server or trainer)."""

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


def register(edge: argparse.ArgumentParser) -> None:
    sub = edge.add_subparsers(dest="edge_command", required=True)
    run = sub.add_parser("run", help="run the agent until stopped (systemd runs this)")
    run.add_argument("--config", type=Path, required=True, help="agent config (YAML)")
    run.set_defaults(handler=_run)
    check = sub.add_parser("check", help="load config and model, run one frame, print detections and latency")
    check.add_argument("--config", type=Path, required=True, help="agent config (YAML)")
    check.add_argument("--image", type=Path, help="picture to run (default: a packaged sample)")
    check.set_defaults(handler=_check)
