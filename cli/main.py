"""`trapline` command line. Each command's module is imported only when that command runs, so
`trapline edge ...` on a trap loads nothing of the server, the trainer or the exporter."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

log = logging.getLogger(__name__)

# command -> (module with `register(parser)`, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "edge": ("trapline.edge.commands", "the on-trap agent: run, check"),
    "server": ("trapline.server.commands", "the fleet server (settings: TRAPLINE_SERVER_* variables)"),
    "train": ("trapline.training.commands", "prepare datasets, fine-tune, evaluate"),
    "export": ("trapline.export.commands", "export ONNX/TFLite (FP32, INT8) and check them; or `bundle`"),
    "provision": (
        "trapline.edge.provisioning.command",
        "turn a fresh Raspberry Pi into a trap (run on the Pi)",
    ),
    "keys": ("trapline.cli.keys", "signing keys for model bundles"),
    "demo": ("trapline.cli.demo", "broker + server + two traps replaying the sample photos"),
}


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _base_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trapline", description=__doc__, add_help=add_help)
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return parser


def _chosen_command(argv: Sequence[str]) -> str | None:
    pre = _base_parser(add_help=False)
    pre.add_argument("command", nargs="?")
    known, _ = pre.parse_known_args(argv)
    return known.command if known.command in COMMANDS else None


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    """The full parser for the command in `argv`; the other commands are listed, not loaded."""
    parser = _base_parser()
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = _chosen_command(argv)
    for name, (module, help_text) in COMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            importlib.import_module(module).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv).parse_args(argv)
    _setup_logging(args.log_level)
    from trapline.edge.backends.base import ModelLoadError

    try:
        return int(args.handler(args))
    except ModelLoadError as exc:  # a wrong model file, or a bundle that does not verify: say why
        log.error("%s", exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
