"""The on-trap agent: capture -> detect -> group bursts -> spool -> MQTT, until told to stop."""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from trapline.bundle import BundleError, resolve_model_file
from trapline.contracts import (
    Detection,
    DetectionMessage,
    DeviceState,
    Heartbeat,
    ImageInfo,
    SequenceSummary,
    StatusMessage,
    TopicKind,
    topic,
    utc_now,
)
from trapline.edge import __version__
from trapline.edge.backends import ModelLoadError
from trapline.edge.bursts import BurstGrouper, BurstState
from trapline.edge.config import PACKAGED_MODEL, PACKAGED_PUBLIC_KEY, AgentConfig
from trapline.edge.detector import Detector
from trapline.edge.health import cpu_temp_c, disk_free_bytes, sd_notify, watchdog_interval_s
from trapline.edge.pictures import crops, thumbnail
from trapline.edge.prefetch import DecodedFrame, FrameDecoder, prefetched
from trapline.edge.publisher import MqttPublisher
from trapline.edge.quarantine import Quarantine
from trapline.edge.sources import Frame, FrameSource, make_source
from trapline.edge.spool import (
    PRIORITY_EMPTY_FRAME,
    DetectionSpool,
    OutboundMessage,
    PendingUpload,
    SpoolError,
)
from trapline.edge.uploader import PictureUploader

log = logging.getLogger(__name__)

_FRAME_COUNTER = "frame_counter"
_BURSTS = "bursts"


@dataclass
class AgentCounters:
    frames_processed: int = 0
    frames_quarantined: int = 0
    spool_errors: int = 0
    model_load_failures: int = 0


def resolve_model(path: Path, public_key: Path) -> Path:
    """The model file to load: a bundle directory is verified first (signature and hashes)."""
    try:
        return resolve_model_file(path, public_key)
    except BundleError as exc:
        raise ModelLoadError(f"refusing model bundle: {exc}") from exc


def load_detector(config: AgentConfig, counters: AgentCounters) -> Detector:
    """The configured model; the packaged one if that cannot be loaded (a trap must keep working)."""
    model = config.model
    try:
        model_file = resolve_model(model.path, model.public_key)
        return Detector(model_file, model.backend, model.threads, model.conf_threshold, model.iou_threshold)
    except ModelLoadError as exc:
        counters.model_load_failures += 1
        if not model.fallback_to_packaged or model.path == PACKAGED_MODEL:
            raise
        log.error("cannot load model %s (%s); running the packaged model instead", model.path, exc)
        packaged = resolve_model(PACKAGED_MODEL, PACKAGED_PUBLIC_KEY)
        return Detector(packaged, "auto", model.threads, model.conf_threshold, model.iou_threshold)


class Agent:
    def __init__(self, config: AgentConfig, source: FrameSource | None = None) -> None:
        self.config = config
        self.counters = AgentCounters()
        self.started = time.monotonic()
        self.last_error: str | None = None
        self.detector = load_detector(config, self.counters)
        self.spool = DetectionSpool(
            config.spool.path, config.spool.max_bytes, config.spool.policy, config.spool.synchronous
        )
        self.quarantine = Quarantine(config.quarantine_dir)
        info = self.detector.info
        self.decoder = FrameDecoder(
            info.input_width,
            info.input_height,
            config.max_image_pixels,
            config.pipeline.reduced_decode,
            self.detector.prepare if config.pipeline.prefetch else None,
        )
        self.source = source or make_source(config.source)
        self._frame_counter = int(self.spool.get_state(_FRAME_COUNTER) or 0)
        self.bursts = BurstGrouper(
            config.device_id,
            config.bursts.gap_s,
            self.detector.info.category_names,
            BurstState.from_json(self.spool.get_state(_BURSTS)),
            config.bursts.lone_min_conf,
        )
        self.publisher = MqttPublisher(config.mqtt, config.device_id, self.spool, self._status)
        self.uploader = PictureUploader(config.upload, self.spool)
        removed = self.spool.remove_orphan_uploads()
        if removed:
            log.info("removed %d picture(s) left behind by an interrupted frame", removed)
        self.stop_event = threading.Event()
        # decode -> spooled, the last frames only (benchmarks read it; the agent runs for months)
        self.frame_ms: deque[float] = deque(maxlen=1000)
        self.last_inference_ms = 0.0

    def _topic(self, kind: TopicKind) -> str:
        return topic(self.config.mqtt.prefix, self.config.device_id, kind)

    def _status(self, state: DeviceState) -> bytes:
        return StatusMessage(
            state=state,
            ts=utc_now(),
            agent_version=__version__,
            model=self.detector.info.ref,
        ).to_json()

    # --- one frame --------------------------------------------------------------------------
    def process(self, frame: Frame) -> None:
        self.process_decoded(self.decoder.decode(frame))

    def process_decoded(self, decoded: DecodedFrame) -> None:
        started = time.perf_counter()
        frame, image = decoded.frame, decoded.image
        if image is None:
            self._quarantine(frame, decoded.error or "not decoded")
            return
        if decoded.tensor is not None and decoded.letterbox is not None:
            result = self.detector.detect_prepared(decoded.tensor, decoded.letterbox)
        else:
            result = self.detector.detect(image)
        self.last_inference_ms = result.inference_ms
        saved_bursts = copy.deepcopy(self.bursts.state)
        sequence_id, frame_index, closed = self.bursts.add(frame.captured_at, result.detections)
        frame_number = self._frame_counter + 1
        message = DetectionMessage(
            id=f"{self.config.device_id}:{frame_number:09d}",
            device_id=self.config.device_id,
            captured_at=frame.captured_at,
            processed_at=utc_now(),
            sequence_id=sequence_id,
            frame_index=frame_index,
            image=ImageInfo(
                file=frame.name,
                sha256=decoded.sha256,
                width=decoded.width,
                height=decoded.height,
                night=decoded.night,
            ),
            model=self.detector.info.ref,
            inference_ms=round(result.inference_ms, 2),
            detections=result.detections,
        )
        outgoing = [self._summary_message(closed)] if closed else []
        outgoing.append(
            OutboundMessage(
                self._topic("detections"),
                message.to_json(),
                priority=1 if message.detections else PRIORITY_EMPTY_FRAME,
            )
        )
        state = {_FRAME_COUNTER: str(frame_number), _BURSTS: self.bursts.state.to_json()}
        pictures: list[PendingUpload] = []
        try:
            pictures = self._pictures(message.id, decoded, result.detections)
            self.spool.put(outgoing, processed_key=frame.key, state=state, uploads=pictures)
        except (SpoolError, OSError) as exc:
            # not marked processed: a folder frame is tried again on the next scan; its pictures
            # are written again then, and must not fill a disk that may already be full
            for picture in pictures:
                picture.path.unlink(missing_ok=True)
            self.bursts.state = saved_bursts
            self.counters.spool_errors += 1
            self.last_error = str(exc)
            log.error("could not spool %s: %s", frame.name, exc)
            return
        self._frame_counter = frame_number
        self.counters.frames_processed += 1
        self.frame_ms.append((time.perf_counter() - started) * 1000.0)
        self.publisher.notify()
        if pictures:
            self.uploader.notify()
        log.debug(
            "%s: %d detection(s) in %.1f ms",
            frame.name,
            len(result.detections),
            result.inference_ms,
        )

    def _pictures(
        self, detection_id: str, decoded: DecodedFrame, detections: list[Detection]
    ) -> list[PendingUpload]:
        """Write the pictures to send for this frame (only frames with a detection), cut from the
        full-resolution photo (decoded now: most frames have no detection and never need it)."""
        mode = self.config.upload.mode
        if mode == "none" or not detections:
            return []
        data, image = decoded.data, decoded.full_image()
        blobs: list[tuple[str, bytes]] = [
            ("crop", c) for c in crops(image, detections, self.config.upload.crop_margin)
        ]
        if mode == "thumbnails":
            blobs.append(("thumbnail", thumbnail(image, self.config.upload.thumbnail_px)))
        elif mode == "frames":
            blobs.append(("frame", data))
        stem = detection_id.replace(":", "_")
        pending: list[PendingUpload] = []
        try:
            for index, (kind, blob) in enumerate(blobs):
                path = self.spool.uploads_dir / f"{stem}-{kind}-{index}.jpg"
                pending.append(PendingUpload(detection_id, kind, path, len(blob)))
                path.write_bytes(blob)  # a crash before the spool commit leaves an orphan: removed at start
        except OSError:
            for written in pending:  # a full disk: leave nothing half done behind
                written.path.unlink(missing_ok=True)
            raise
        return pending

    def _quarantine(self, frame: Frame, reason: str) -> None:
        self.counters.frames_quarantined += 1
        self.last_error = f"{frame.name}: {reason}"
        try:
            self.quarantine.put(frame, reason)
        except OSError as exc:
            log.error("could not quarantine %s (%s): %s", frame.name, reason, exc)
        try:
            self.spool.mark_processed(frame.key)
        except SpoolError as exc:
            log.error("could not record %s as handled: %s", frame.name, exc)

    def _summary_message(self, summary: SequenceSummary) -> OutboundMessage:
        return OutboundMessage(self._topic("sequences"), summary.to_json())

    def _spool_summary(self, summary: SequenceSummary | None) -> None:
        if summary is None:
            return
        try:
            self.spool.put([self._summary_message(summary)], state={_BURSTS: self.bursts.state.to_json()})
            self.publisher.notify()
        except SpoolError as exc:
            self.counters.spool_errors += 1
            log.error("could not spool summary of %s: %s", summary.sequence_id, exc)

    # --- timed work -----------------------------------------------------------------------------
    def heartbeat(self) -> Heartbeat:
        return Heartbeat(
            ts=utc_now(),
            uptime_s=round(time.monotonic() - self.started, 1),
            frames_processed=self.counters.frames_processed,
            frames_quarantined=self.counters.frames_quarantined,
            spool_depth=self.spool.depth,
            spool_bytes=self.spool.size_bytes,
            dropped=self.spool.dropped,
            disk_free_bytes=disk_free_bytes(self.config.spool.path.parent),
            cpu_temp_c=cpu_temp_c(),
            last_error=(self.last_error or self.publisher.last_error or None),
        )

    def run(self, drain_timeout_s: float = float("inf")) -> int:
        """Process frames until stopped or the source is exhausted; then drain the spool."""
        self.publisher.start()
        self.uploader.start()
        sd_notify("READY=1")
        watchdog_s = watchdog_interval_s()
        next_heartbeat = next_watchdog = 0.0
        exhausted = False
        try:
            frames = self.source.frames(self.stop_event, self.spool.is_processed)
            for decoded in prefetched(frames, self.decoder, self.config.pipeline.prefetch):
                if decoded is not None:
                    self.process_decoded(decoded)
                self._spool_summary(self.bursts.close_if_idle(datetime.now(UTC)))
                now = time.monotonic()
                if now >= next_heartbeat:
                    self.publisher.publish_now("heartbeat", self.heartbeat().to_json())
                    next_heartbeat = now + self.config.heartbeat_interval_s
                if watchdog_s and now >= next_watchdog:
                    sd_notify("WATCHDOG=1")
                    next_watchdog = now + watchdog_s
            exhausted = not self.stop_event.is_set()
        finally:
            self.source.close()
            self._spool_summary(self.bursts.close())
            if exhausted:
                log.info(
                    "source exhausted; waiting for %d spooled message(s) to be sent",
                    self.spool.depth,
                )
                self._wait_drained(drain_timeout_s, watchdog_s)
            sd_notify("STOPPING=1")
            self.uploader.stop()
            self.publisher.stop("stopped")
            self.spool.close()
        log.info(
            "stopped: %d frames processed, %d quarantined, %d messages unsent",
            self.counters.frames_processed,
            self.counters.frames_quarantined,
            self.spool.depth,
        )
        return 0

    def _wait_drained(self, timeout_s: float, watchdog_s: float | None) -> None:
        deadline = time.monotonic() + timeout_s
        while self.spool.depth > 0 and not self.stop_event.is_set() and time.monotonic() < deadline:
            if watchdog_s:
                sd_notify("WATCHDOG=1")
            self.stop_event.wait(0.1)

    def stop(self) -> None:
        self.stop_event.set()
