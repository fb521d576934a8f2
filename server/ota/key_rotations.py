"""Key rotation on the server: signed statements registered once, sent to the traps as their
retained `cmd/keys`, and what each trap reported back on `ota`.

A statement is signed by the release manager (`trapline keys rotate`); the server cannot make one.
`register_rotation` checks it the way a trap will (trapline/key_rotation.py) against the fleet's
keyring: the server's release keyring changed by every statement registered so far. A trap away
for several rotations needs every one since its last, in order, so each trap's retained command
holds the newest statements (up to `MAX_KEY_STATEMENTS`) up to the one it should apply.

The fleet keyring is also what new releases and rollback grants are checked against, and what
enrolment hands a new trap, so the server never offers a bundle signed by a revoked key.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from trapline.contracts import (
    MAX_KEY_STATEMENTS,
    KeyRotationStatement,
    KeysCommand,
    OtaProgress,
    topic,
)
from trapline.key_rotation import RotationError, apply_rotation, changed_keys, statement_digest
from trapline.keyring import Keyring, KeyringError
from trapline.server.core.config import ServerSettings
from trapline.server.db import transaction
from trapline.server.models import Device, DeviceKeyring, KeyRotation
from trapline.server.ota.commands import CommandSender

log = logging.getLogger(__name__)


class KeyRotationError(ValueError):
    """The statement cannot be registered or sent; the message says why and what to do."""


def statement_of(row: KeyRotation) -> KeyRotationStatement:
    return KeyRotationStatement.model_validate_json(json.dumps(row.statement))


def fleet_keyring(session: Session, settings: ServerSettings) -> Keyring:
    """The release keyring with every registered statement's change (each was judged when it was
    registered): the keys the fleet trusts once the traps have applied them all."""
    try:
        keyring = Keyring.load(settings.release_keyring)
    except KeyringError as exc:
        raise KeyRotationError(f"the server's release keyring: {exc}") from exc
    rows = list(session.scalars(select(KeyRotation).order_by(KeyRotation.sequence)))
    for row in rows:
        keyring = Keyring(changed_keys(keyring, statement_of(row)), keyring.source)
    if rows:
        keyring = Keyring(keyring.keys, f"{settings.release_keyring} after statement {rows[-1].sequence}")
    return keyring


def latest_sequence(session: Session) -> int | None:
    return session.scalar(select(func.max(KeyRotation.sequence)))


def register_rotation(
    session: Session,
    settings: ServerSettings,
    statement: KeyRotationStatement,
    device_ids: Sequence[str] | None,
    now: datetime,
) -> list[str]:
    """Keep `statement` (once) and make it the newest statement for `device_ids` (every registered
    trap when None); returns the traps it is to reach. The controller publishes it."""
    digest = statement_digest(statement)
    existing = session.get(KeyRotation, statement.sequence)
    if existing is not None and existing.digest != digest:
        raise KeyRotationError(
            f"statement {statement.sequence} is registered already, with other content: a sequence number"
            f" is used once (sign the new one with --sequence {(latest_sequence(session) or 0) + 1})"
        )
    if existing is None:
        latest = latest_sequence(session)
        if latest is not None and statement.sequence < latest:
            raise KeyRotationError(
                f"statement {statement.sequence} is older than the latest registered ({latest}): traps would"
                f" refuse it as a replay; sign it again with --sequence {latest + 1}"
            )
        try:
            after = apply_rotation(fleet_keyring(session, settings), statement)
        except RotationError as exc:
            raise KeyRotationError(f"traps would refuse it: {exc}") from exc
        session.add(
            KeyRotation(
                sequence=statement.sequence,
                statement=json.loads(statement.to_json()),
                digest=digest,
                signer_key_id=statement.key_id,
                issued_at=statement.issued_at,
                registered_at=now,
            )
        )
        log.info(
            "key rotation statement %d registered: the fleet trusts %s",
            statement.sequence,
            ", ".join(sorted(after.keys)),
        )
    targets = sorted(set(device_ids)) if device_ids is not None else list(session.scalars(select(Device.id)))
    known = set(session.scalars(select(Device.id).where(Device.id.in_(targets))))
    unknown = [d for d in targets if d not in known]
    if unknown:
        raise KeyRotationError(f"unknown traps: {', '.join(unknown)}")
    for device_id in targets:
        row = session.get(DeviceKeyring, device_id)
        if row is None:
            row = DeviceKeyring(device_id=device_id, published=False)
            session.add(row)
        if row.desired_sequence is None or row.desired_sequence < statement.sequence:
            row.desired_sequence, row.published = statement.sequence, False
    session.flush()
    return targets


def keys_command(session: Session, upto: int) -> KeysCommand | None:
    """A trap's retained command: the newest statements up to `upto`, oldest first."""
    rows = list(
        session.scalars(
            select(KeyRotation)
            .where(KeyRotation.sequence <= upto)
            .order_by(KeyRotation.sequence.desc())
            .limit(MAX_KEY_STATEMENTS)
        )
    )
    if not rows:
        return None
    return KeysCommand(statements=[statement_of(row) for row in reversed(rows)])


def publish_pending_keys(
    sessions: sessionmaker[Session], sender: CommandSender, prefix: str, now: datetime
) -> int:
    """Publish every trap's key statements the broker does not hold yet; returns how many went out."""
    with sessions() as session:
        pending = list(
            session.scalars(
                select(DeviceKeyring.device_id).where(
                    DeviceKeyring.published.is_(False), DeviceKeyring.desired_sequence.is_not(None)
                )
            )
        )
    sent = 0
    for device_id in pending:
        with transaction(sessions) as session:
            row = session.get(DeviceKeyring, device_id)
            if row is None or row.published or row.desired_sequence is None:
                continue
            command = keys_command(session, row.desired_sequence)
            payload = command.to_json() if command is not None else b""
            if not sender.send(topic(prefix, device_id, "cmd/keys"), payload):
                log.warning("could not publish the key statements for %s; trying again later", device_id)
                break
            row.published, row.published_at = True, now
            sent += 1
    return sent


def record_key_report(session: Session, device_id: str, message: OtaProgress, now: datetime) -> None:
    """A trap's `keys_applied` / `keys_refused` report (ingest calls it for those stages)."""
    row = session.get(DeviceKeyring, device_id)
    if row is None:
        row = DeviceKeyring(device_id=device_id, published=False)
        session.add(row)
    sequence = message.key_sequence
    if message.stage == "keys_applied" and sequence is not None:
        # reports may arrive late and out of order: the newest sequence wins
        if row.applied_sequence is None or sequence >= row.applied_sequence:
            row.applied_sequence, row.applied_at = sequence, now
            row.trusted_keys = list(message.trusted_keys) if message.trusted_keys is not None else None
        # a refusal the trap has since got past (the statement applied after all, e.g. once the
        # disk had room) is no longer news; one of a newer statement stays
        if row.refused_at is not None and (row.refused_sequence or 0) <= sequence:
            row.refused_sequence, row.refused_reason, row.refused_at = None, None, None
    elif message.stage == "keys_refused":
        row.refused_sequence, row.refused_reason, row.refused_at = sequence, message.reason, now
        log.warning("trap %s refused key statement %s: %s", device_id, sequence, (message.reason or "")[:300])


def key_status(session: Session) -> tuple[list[KeyRotation], list[DeviceKeyring]]:
    """The registered statements (oldest first) and every trap's keyring state."""
    rotations = list(session.scalars(select(KeyRotation).order_by(KeyRotation.sequence)))
    devices = list(session.scalars(select(DeviceKeyring).order_by(DeviceKeyring.device_id)))
    return rotations, devices
