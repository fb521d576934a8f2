"""`trapline` command line: `trapline edge run|check`, `trapline demo`."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path
from types import FrameType

from export.commands import register as register_export
from server.commands import register as register_server
from training.commands import register as register_train

log = logging.getLogger(__name__)


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _edge_run(args: argparse.Namespace) -> int:
    from edge.agent import Agent
    from edge.backends import ModelLoadError
    from edge.config import ConfigError, load_config

    try:
        config = load_config(args.config)
        agent = Agent(config)
    except (ConfigError, ModelLoadError) as exc:
        log.error("%s", exc)
        return 78  # EX_CONFIG: systemd shows it, and does not loop on a broken config

    def _stop(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        agent.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    return agent.run()


def _edge_check(args: argparse.Namespace) -> int:
    from edge.check import run_check

    return run_check(args.config, args.image)


def _demo(args: argparse.Namespace) -> int:
    from trapline.demo import run_demo

    return run_demo(frames=args.frames, seconds=args.seconds)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trapline", description=__doc__)
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    commands = parser.add_subparsers(dest="command", required=True)

    edge = commands.add_parser("edge", help="the on-trap agent").add_subparsers(
        dest="edge_command", required=True
    )
    run = edge.add_parser("run", help="run the agent until stopped (systemd runs this)")
    run.add_argument("--config", type=Path, required=True, help="agent config (YAML)")
    run.set_defaults(handler=_edge_run)
    check = edge.add_parser(
        "check", help="load config and model, run one frame, print detections and latency"
    )
    check.add_argument("--config", type=Path, required=True, help="agent config (YAML)")
    check.add_argument("--image", type=Path, help="picture to run (default: a packaged sample)")
    check.set_defaults(handler=_edge_check)

    # workstation commands; their heavy imports happen only when they run
    register_train(commands)
    register_export(commands)
    register_server(commands)

    demo = commands.add_parser("demo", help="broker + agents replaying the sample photos")
    demo.add_argument("--frames", type=int, default=200, help="frames each trap replays")
    demo.add_argument("--seconds", type=float, help="stop after this long (default: run until Ctrl-C)")
    demo.set_defaults(handler=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.log_level)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
