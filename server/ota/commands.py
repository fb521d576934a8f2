"""Each trap's desired release as its retained `cmd/model`, published by the server's own MQTT
client; the broker keeps it for a trap that is away and hands it over when the trap comes back."""

from __future__ import annotations

import hashlib
import logging
import threading
from datetime import datetime
from typing import Any, Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from trapline.contracts import ModelCommand, RollbackGrant, topic
from trapline.credentials import reveal
from trapline.server.core.config import ServerSettings
from trapline.server.db import transaction
from trapline.server.models import DeviceRelease, Release, Rollout

log = logging.getLogger(__name__)


class CommandSender(Protocol):
    def send(self, topic: str, payload: bytes) -> bool:
        """Publish retained at QoS 1; True once the broker has acknowledged it."""


def download_delay_s(release_id: int, device_id: str, spread_s: int) -> int:
    """A fixed, evenly spread delay per trap and release, so a fleet does not download at once."""
    if spread_s <= 0:
        return 0
    digest = hashlib.sha256(f"{release_id}:{device_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % (spread_s + 1)


def model_command(release: Release, device_id: str, rollout: Rollout | None, now: datetime) -> ModelCommand:
    grant = RollbackGrant.model_validate(release.rollback_grant) if release.rollback_grant else None
    return ModelCommand(
        release_id=release.id,
        rollout_id=rollout.id if rollout else None,
        name=release.name or "",
        version=release.version or "",
        url=release.bundle_url,
        sha256=release.bundle_sha256,
        size=release.size_bytes or 0,
        model_sha256=release.model_sha256 or "",
        key_id=release.key_id or "",
        runtime=release.runtime or "",
        min_agent_version=release.min_agent_version,
        rollback=grant,
        download_delay_s=download_delay_s(release.id, device_id, rollout.spread_s if rollout else 0),
        issued_at=now,
    )


def publish_pending(
    sessions: sessionmaker[Session], sender: CommandSender, prefix: str, now: datetime
) -> int:
    """Publish every desired release the broker does not hold yet; returns how many went out."""
    with sessions() as session:
        pending = list(
            session.scalars(select(DeviceRelease.device_id).where(DeviceRelease.published.is_(False)))
        )
    sent = 0
    for device_id in pending:
        with transaction(sessions) as session:
            row = session.get(DeviceRelease, device_id)
            if row is None or row.published:
                continue
            release = session.get(Release, row.desired_release_id) if row.desired_release_id else None
            rollout = session.get(Rollout, row.rollout_id) if row.rollout_id else None
            # no desired release: an empty retained message clears the command
            payload = model_command(release, device_id, rollout, now).to_json() if release else b""
            if not sender.send(topic(prefix, device_id, "cmd/model"), payload):
                # most likely the broker is away: the rest waits for the next tick
                log.warning("could not publish the command for %s; trying again later", device_id)
                break
            row.published, row.published_at = True, now
            sent += 1
    return sent


class MqttCommandSender:
    """The server's MQTT client for commands (own client id; the ACL lets the server user write
    every trap's `cmd/` topics and no trap write any)."""

    def __init__(self, settings: ServerSettings, timeout_s: float = 10.0) -> None:
        self.settings = settings
        self.timeout_s = timeout_s
        self.connected = threading.Event()
        self._refused: dict[int, str] = {}
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=settings.ota_client_id, protocol=mqtt.MQTTv5
        )
        if settings.mqtt_username:
            self.client.username_pw_set(settings.mqtt_username, reveal(settings.mqtt_password))
        self.client.reconnect_delay_set(1, 30)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish

    def _on_connect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
        if reason.is_failure:
            log.error("broker refused the command publisher: %s", reason)
            return
        self.connected.set()

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
        self.connected.clear()

    def _on_publish(self, _c: mqtt.Client, _u: Any, mid: int, reason: ReasonCode, _p: Any) -> None:
        if reason.is_failure:
            self._refused[mid] = str(reason)

    def start(self) -> None:
        self.client.connect_async(self.settings.mqtt_host, self.settings.mqtt_port, keepalive=30)
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def send(self, topic_name: str, payload: bytes) -> bool:
        if not self.connected.wait(self.timeout_s):
            return False
        info = self.client.publish(topic_name, payload, qos=1, retain=True)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            return False
        try:
            info.wait_for_publish(self.timeout_s)
        except (RuntimeError, ValueError):
            return False
        refused = self._refused.pop(info.mid, None)
        if refused is not None:
            log.error(
                "broker refused the command on %s: %s (check the server user's ACL)", topic_name, refused
            )
            return False
        return info.is_published()
