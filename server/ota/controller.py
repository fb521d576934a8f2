"""`trapline server ota`: the loop that moves rollouts along and keeps the broker's retained
commands equal to the traps' desired releases and key rotation statements. Run one per fleet;
everything it does is idempotent, so a restart (or a second copy by mistake) only repeats what is
already true."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime

from sqlalchemy.orm import Session, sessionmaker

from trapline.server.core.config import ServerSettings
from trapline.server.db import transaction
from trapline.server.ota.commands import CommandSender, publish_pending
from trapline.server.ota.key_rotations import publish_pending_keys
from trapline.server.ota.rollouts import advance

log = logging.getLogger(__name__)


class RolloutController:
    def __init__(
        self, settings: ServerSettings, sessions: sessionmaker[Session], sender: CommandSender
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.sender = sender
        self._stop = threading.Event()

    def tick(self) -> list[str]:
        now = datetime.now(UTC)
        with transaction(self.sessions) as session:
            events = advance(session, now)
        for event in events:
            log.info("%s", event)
        sent = publish_pending(self.sessions, self.sender, self.settings.mqtt_prefix, now)
        if sent:
            log.info("published %d model command(s)", sent)
        keys = publish_pending_keys(self.sessions, self.sender, self.settings.mqtt_prefix, now)
        if keys:
            log.info("published the key statements of %d trap(s)", keys)
        return events

    def run(self) -> None:
        log.info("rollout controller running (every %.1f s)", self.settings.ota_tick_s)
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # a database hiccup must not end the loop
                log.exception("rollout tick failed; trying again")
            self._stop.wait(self.settings.ota_tick_s)

    def stop(self) -> None:
        self._stop.set()
