"""`trapline keys`: the release keys that sign model bundles, and the keyrings traps trust.

Lifecycle (README, "Release keys"): `generate` makes a key pair (private half 0600, kept by the
release manager, never in the repository or an image); `show` prints a key's id (the one manifests
name); `export` builds a keyring folder of public keys (`<key id>.pub`) for the server's
`release_keyring`, from which enrolment hands traps their keys; `list` prints a keyring's ids;
`rotate` signs a key rotation statement (add keys, revoke key ids) with a key the traps trust now,
for `trapline server keys publish` to send to the traps.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def _generate(args: argparse.Namespace) -> int:
    from trapline.keyring import generate_keys

    private, public = args.out / f"{args.name}.key", args.out / f"{args.name}.pub"
    if private.exists():
        print(f"error: {private} exists; a release key is never overwritten")
        return 2
    identity = generate_keys(private, public)
    print(f"key id:      {identity}")
    print(f"private key: {private} (mode 0600: keep it secret, never in the repository)")
    print(f"public key:  {public}")
    return 0


def _public_of(path: Path) -> bytes:
    """The public key PEM of a .pub file, or of a private key (.key)."""
    from trapline.keyring import public_pem, read_private_key

    data = path.read_bytes()
    if b"PRIVATE KEY" in data:
        return public_pem(read_private_key(path).public_key())
    return data


def _show(args: argparse.Namespace) -> int:
    from trapline.keyring import KeyringError, key_id, read_public_key

    status = 0
    for path in args.keys:
        try:
            print(f"{key_id(read_public_key(_public_of(path), str(path)))}  {path}")
        except (OSError, KeyringError) as exc:
            print(f"error: {path}: {exc}")
            status = 2
    return status


def _list(args: argparse.Namespace) -> int:
    from trapline.keyring import Keyring, KeyringError

    try:
        keyring = Keyring.load(args.keyring)
    except KeyringError as exc:
        print(f"error: {exc}")
        return 2
    for identity in sorted(keyring.keys):
        print(identity)
    return 0


def _export(args: argparse.Namespace) -> int:
    from trapline.keyring import KeyringError, install_public_key

    for path in args.keys:
        try:
            identity = install_public_key(args.out, _public_of(path))
        except (OSError, KeyringError) as exc:
            print(f"error: {path}: {exc}")
            return 2
        print(f"{identity}  -> {args.out / f'{identity}.pub'}")
    return 0


def _rotate(args: argparse.Namespace) -> int:
    from pydantic import TypeAdapter, ValidationError

    from trapline.contracts import KeyId
    from trapline.files import atomic_write
    from trapline.key_rotation import RotationError, apply_rotation, describe, sign_rotation
    from trapline.keyring import Keyring, KeyringError, read_public_key

    if args.out.exists():
        print(f"error: {args.out} exists; a signed statement is never overwritten (its sequence is used)")
        return 2
    try:
        revoke = [TypeAdapter(KeyId).validate_python(value) for value in args.revoke]
    except ValidationError:
        print(f"error: --revoke takes key ids (16 hex digits, `trapline keys show`): {args.revoke}")
        return 2
    try:
        added = [read_public_key(_public_of(path), str(path)) for path in args.add]
        statement = sign_rotation(args.signing_key, args.sequence, added, revoke)
        if args.keyring is not None:
            # the fleet's keyring as the traps hold it: refuse here what they would refuse
            after = apply_rotation(Keyring.load(args.keyring), statement)
    except (OSError, KeyringError) as exc:
        kind = "refused" if isinstance(exc, RotationError) else "error"
        print(f"{kind}: {exc}")
        return 2
    atomic_write(args.out, statement.to_json() + b"\n")
    print(f"{describe(statement)}")
    if args.keyring is not None:
        print(f"traps trusting {args.keyring} will trust: {', '.join(sorted(after.keys))}")
    print(f"statement: {args.out} (send it with `trapline server keys publish {args.out}`)")
    return 0


def _sequence(value: str) -> int:
    number = int(value)
    if not 1 <= number <= 2**31 - 1:
        raise argparse.ArgumentTypeError("a sequence number is 1 or more")
    return number


def register(keys: argparse.ArgumentParser) -> None:
    sub = keys.add_subparsers(dest="keys_command", required=True)
    gen = sub.add_parser("generate", help="a new Ed25519 key pair for signing bundles")
    gen.add_argument("--out", type=Path, required=True)
    gen.add_argument("--name", default="trapline-release")
    gen.set_defaults(handler=_generate)
    show = sub.add_parser("show", help="the key id of .pub or .key files")
    show.add_argument("keys", type=Path, nargs="+")
    show.set_defaults(handler=_show)
    listing = sub.add_parser("list", help="the key ids in a keyring folder")
    listing.add_argument("keyring", type=Path)
    listing.set_defaults(handler=_list)
    export = sub.add_parser("export", help="add public keys (of .pub or .key files) to a keyring folder")
    export.add_argument("keys", type=Path, nargs="+")
    export.add_argument("--out", type=Path, required=True, help="the keyring folder")
    export.set_defaults(handler=_export)
    rotate = sub.add_parser(
        "rotate",
        help="sign a key rotation statement: traps add these keys and revoke those ids",
        description="Sign a statement that changes the keyring of every trap it reaches. It must be"
        " signed by a key the traps trust now, and may not revoke that key (revoke it later with"
        " another trusted key).",
    )
    rotate.add_argument(
        "--add", type=Path, action="append", default=[], help="a public key (.pub or .key) to trust"
    )
    rotate.add_argument("--revoke", action="append", default=[], help="the id of a key to stop trusting")
    rotate.add_argument("--signing-key", type=Path, required=True, help="a private key the traps trust now")
    rotate.add_argument(
        "--sequence",
        type=_sequence,
        required=True,
        help="one more than the last statement's (`trapline server keys status` shows it); traps refuse"
        " a statement not newer than the last they applied",
    )
    rotate.add_argument(
        "--keyring", type=Path, help="check it against this keyring first (the fleet's, as the traps hold it)"
    )
    rotate.add_argument("--out", type=Path, required=True, help="where to write the signed statement (JSON)")
    rotate.set_defaults(handler=_rotate)
