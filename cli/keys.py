"""`trapline keys generate`: an Ed25519 key pair for signing model bundles."""

from __future__ import annotations

import argparse
from pathlib import Path


def _generate(args: argparse.Namespace) -> int:
    from trapline.keyring import generate_keys

    private, public = args.out / f"{args.name}.key", args.out / f"{args.name}.pub"
    identity = generate_keys(private, public)
    print(f"key id:      {identity}")
    print(f"private key: {private} (mode 0600: keep it secret, never in the repository)")
    print(f"public key:  {public}")
    return 0


def register(keys: argparse.ArgumentParser) -> None:
    sub = keys.add_subparsers(dest="keys_command", required=True)
    gen = sub.add_parser("generate", help="a new Ed25519 key pair for signing bundles")
    gen.add_argument("--out", type=Path, required=True)
    gen.add_argument("--name", default="trapline-release")
    gen.set_defaults(handler=_generate)
