"""Boxes reviewers marked "not an animal": hard negatives for retraining, and each camera's memory
of its static false positives, published retained on `<prefix>/<device>/cmd/ignore-regions`.

The memory is rebuilt from the labels every time (a corrected label drops out of it), newest
first, at most MAX_IGNORE_REGIONS per camera; the signature is computed from the best picture the
server has with the same function the trap uses.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime

import cv2
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from trapline.contracts import MAX_IGNORE_REGIONS, TOPICS, IgnoreRegion, IgnoreRegionsCommand, topic
from trapline.credentials import reveal
from trapline.edge.ignore_regions import look_signature
from trapline.server.clustering.crops import CropError, read_rgb
from trapline.server.core.config import ServerSettings
from trapline.server.db import transaction
from trapline.server.learning.labels import NOT_AN_ANIMAL, current_labels
from trapline.server.models import Detection, DetectionFrame, Job
from trapline.server.models import IgnoreRegion as IgnoreRegionRow
from trapline.server.queries import media_by_frame, picture

log = logging.getLogger(__name__)


def devices_of(session: Session, keys: Sequence[str]) -> set[str]:
    ids = [int(k[1:]) for k in keys if k.startswith("d")]
    if not ids:
        return set()
    query = select(DetectionFrame.device_id).join(Detection, Detection.frame_id == DetectionFrame.id)
    return set(session.scalars(query.where(Detection.id.in_(ids)).distinct()))


def negative_detection_ids(session: Session, device_id: str | None = None) -> list[int]:
    """Boxes whose current label is "not an animal" (newest first)."""
    labels = current_labels(session)
    ids = [lab.detection_id for lab in labels.values() if lab.label == NOT_AN_ANIMAL and lab.detection_id]
    if device_id is not None and ids:
        query = select(Detection.id).join(DetectionFrame, Detection.frame_id == DetectionFrame.id)
        mine = set(session.scalars(query.where(DetectionFrame.device_id == device_id, Detection.id.in_(ids))))
        ids = [i for i in ids if i in mine]
    return sorted(ids, reverse=True)


def rebuild_regions(settings: ServerSettings, session: Session, device_id: str) -> IgnoreRegionsCommand:
    """Bring the device's region rows in line with the labels; the command to send. The caller
    commits."""
    wanted = negative_detection_ids(session, device_id)[:MAX_IGNORE_REGIONS]
    rows = {
        r.detection_id: r
        for r in session.scalars(select(IgnoreRegionRow).where(IgnoreRegionRow.device_id == device_id))
    }
    for det_id, row in rows.items():
        row.active = det_id in wanted
    for det_id in wanted:
        if det_id in rows:
            continue
        det = session.get(Detection, det_id)
        if det is None:
            continue
        media = picture(media_by_frame(session, [det.frame_id])[det.frame_id])
        if media is None:
            log.warning("box %d has no whole-frame picture: it cannot join the camera's memory", det_id)
            continue
        try:
            rgb = read_rgb(settings.media_dir / media.sha256[:2] / media.sha256)
        except CropError as exc:
            log.warning("box %d: %s", det_id, exc)
            continue
        signature = look_signature(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), (det.x, det.y, det.w, det.h))
        row = IgnoreRegionRow(device_id=device_id, detection_id=det_id, x=det.x, y=det.y, w=det.w, h=det.h,
                              signature=signature, created_at=datetime.now(UTC), active=True)  # fmt: skip
        session.add(row)
        rows[det_id] = row
    session.flush()
    regions = []
    for det_id in wanted:
        kept = rows.get(det_id)
        if kept is not None and kept.active:
            det = session.get(Detection, det_id)
            regions.append(IgnoreRegion(bbox=(kept.x, kept.y, kept.w, kept.h), signature=kept.signature,
                                        source=det.frame_id if det else f"{device_id}:unknown"))  # fmt: skip
    return IgnoreRegionsCommand(ts=datetime.now(UTC), regions=regions)


def publish_command(
    settings: ServerSettings, device_id: str, command: IgnoreRegionsCommand, timeout_s: float = 10
) -> None:
    """Publish retained (the trap gets it whenever it next connects) and wait for the broker."""
    spec = TOPICS["cmd/ignore-regions"]
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"trapline-learning-{device_id}", protocol=mqtt.MQTTv5
    )
    if settings.mqtt_username:
        client.username_pw_set(settings.mqtt_username, reveal(settings.mqtt_password))
    client.connect(settings.mqtt_host, settings.mqtt_port, 30)
    client.loop_start()
    try:
        info = client.publish(
            topic(settings.mqtt_prefix, device_id, "cmd/ignore-regions"),
            command.to_json(),
            qos=spec.qos,
            retain=spec.retain,
        )
        info.wait_for_publish(timeout_s)
        if not info.is_published():
            raise TimeoutError(f"the broker did not acknowledge the ignore-regions command for {device_id}")
    finally:
        client.disconnect()
        client.loop_stop()


def run_ignore_regions_job(settings: ServerSettings, sessions: sessionmaker[Session], job_id: str) -> None:
    with sessions() as session:
        job = session.get(Job, job_id)
        if job is None:
            raise LookupError(f"no job {job_id}")
        device_id = str(job.params["device_id"])
    with transaction(sessions) as session:
        command = rebuild_regions(settings, session, device_id)
    publish_command(settings, device_id, command)
    with transaction(sessions) as session:
        job = session.get(Job, job_id)
        if job is not None:
            job.state, job.progress, job.updated_at = "done", 1.0, datetime.now(UTC)
            job.message = f"{len(command.regions)} region(s) sent to {device_id}"
