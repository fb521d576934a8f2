"""`cmd/keys`: the trap's side of key rotation.

The server keeps the newest signed key rotation statements retained on the trap's `cmd/keys`
(trapline/contracts.py `KeysCommand`). For each command the trap applies, oldest first, every
statement newer than the last one it applied, each verified against the keyring as the ones before
left it (trapline/key_rotation.py); writes the result in one atomic step (edge/keyring_store.py);
and reports on `ota`: `keys_applied` with the sequence and the keys it trusts now, or
`keys_refused` with the reason (a statement not signed by a trusted key, tampered, replayed,
revoking its own signer or every key; a malformed command). The log says the same.

From the next load on, bundles, rollback grants and the next statements are checked against the
new keyring: a release signed by a revoked key is refused, one signed by an added key accepted.
Models already loaded keep running; each model is verified again whenever it is loaded (at start).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from pydantic import BaseModel

from trapline.contracts import KeysCommand, OtaProgress, OtaStage, iso, utc_now
from trapline.edge.keyring_store import AppliedRecord, KeyringStore
from trapline.key_rotation import apply_statements, describe
from trapline.keyring import KeyringError

log = logging.getLogger(__name__)

ReportSink = Callable[[bytes], None]


class KeyRotationHandler:
    """Applies `cmd/keys` commands to the trap's keyring store and reports the outcome."""

    def __init__(
        self, store: KeyringStore, report: ReportSink, on_change: Callable[[], None] | None = None
    ) -> None:
        self.store = store
        self.report = report
        self.on_change = on_change  # told after the keyring changed (model updates judge anew)
        self._lock = threading.Lock()  # one command at a time (paho delivers on one thread anyway)

    def on_command(self, command: BaseModel | None) -> None:
        if command is None:
            log.info("the server cleared cmd/keys; the trusted keyring stays as it is")
            return
        if not isinstance(command, KeysCommand):
            raise TypeError(f"expected a KeysCommand, got {type(command).__name__}")
        with self._lock:
            self._apply(command)

    def _apply(self, command: KeysCommand) -> None:
        newest = command.statements[-1].sequence
        try:
            keyring, record = self.store.current()
        except KeyringError as exc:
            self._refused(newest, f"cannot read the trusted keyring: {exc}")
            return
        result = apply_statements(keyring, record.sequence, record.digest, command.statements)
        for sequence in result.in_effect:
            log.info("key rotation statement %d: already in effect here, nothing to change", sequence)
        if result.changed:
            last = result.applied[-1]
            applied = AppliedRecord(result.sequence, result.digest, last.key_id, iso(utc_now()))
            try:
                self.store.write(result.keyring, applied)
            except (OSError, KeyringError) as exc:
                # nothing changed on disk; the retained command comes again after a reconnect
                self._refused(result.sequence, f"could not write the new keyring: {exc}")
                return
            for statement in result.applied:
                log.warning("key rotation applied: %s", describe(statement))
            if self.on_change is not None:
                self.on_change()
            trusted = sorted(result.keyring.keys)
            self._send(
                "keys_applied",
                result.sequence,
                "; ".join(describe(s) for s in result.applied) + f"; trusting {', '.join(trusted)}",
                trusted,
            )
        for sequence, why in result.refused:
            self._refused(sequence, why)
        if not result.changed and not result.refused and not result.in_effect:
            log.debug("cmd/keys: nothing newer than statement %d", record.sequence)

    def command_error(self, reason: str) -> None:
        """A `cmd/keys` command the dispatcher could not use (malformed, too large)."""
        self._send("keys_refused", None, reason)

    def _refused(self, sequence: int | None, reason: str) -> None:
        log.error("key rotation statement %s refused: %s", sequence, reason)
        self._send("keys_refused", sequence, reason)

    def _send(
        self, stage: OtaStage, sequence: int | None, reason: str, trusted: list[str] | None = None
    ) -> None:
        progress = OtaProgress(
            ts=utc_now(), stage=stage, reason=reason[:500], key_sequence=sequence, trusted_keys=trusted
        )
        try:
            self.report(progress.to_json())
        except Exception as exc:  # a full disk must not stop the command link; the log keeps it
            log.error("could not queue a key rotation report: %s", exc)
