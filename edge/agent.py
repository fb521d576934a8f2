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

import numpy as np
from pydantic import BaseModel

from trapline import model_source
from trapline.bundle import BundleError
from trapline.contracts import (
    Detection,
    DetectionMessage,
    DeviceState,
    Heartbeat,
    IgnoreRegionsCommand,
    ImageInfo,
    SequenceSummary,
    StatusMessage,
    TopicKind,
    ViewCheck,
    topic,
    utc_now,
)
from trapline.edge import __version__
from trapline.edge.backends import ModelLoadError
from trapline.edge.bursts import BurstGrouper, BurstState
from trapline.edge.candidates import CandidateSampler
from trapline.edge.clock import clock_unsynced
from trapline.edge.config import PACKAGED_KEYRING, PACKAGED_MODEL, AgentConfig
from trapline.edge.deployment import DeploymentReporter
from trapline.edge.detector import Detector, FrameResult
from trapline.edge.downlink import CommandDispatcher, CommandHandler, Downlink, MqttCommandLink
from trapline.edge.health import cpu_temp_c, disk_free_bytes, sd_notify, watchdog_interval_s
from trapline.edge.ignore_regions import IgnoreRegionMemory
from trapline.edge.imaging import BadImageError, decode_image
from trapline.edge.key_rotation import KeyRotationHandler
from trapline.edge.keyring_store import KeyringStore, trust_dir, trusted_keyring
from trapline.edge.ota.updater import ModelUpdates
from trapline.edge.pictures import blur_boxes, crops, encode_jpeg, thumbnail
from trapline.edge.prefetch import DecodedFrame, FrameDecoder, prefetched
from trapline.edge.publisher import MqttPublisher
from trapline.edge.quarantine import Quarantine
from trapline.edge.rehome import rehome_spool, rehomed_total
from trapline.edge.scene import SceneReference
from trapline.edge.sources import Frame, FrameSource, make_source
from trapline.edge.spool import (
    PRIORITY_EMPTY_FRAME,
    DetectionSpool,
    OutboundMessage,
    PendingUpload,
    SpoolError,
)
from trapline.edge.uploader import PictureUploader
from trapline.files import fsync_dir, write_synced
from trapline.model_source import ModelSource

log = logging.getLogger(__name__)

_FRAME_COUNTER = "frame_counter"
_BURSTS = "bursts"
# pruning old "frame done" marks and giving free pages back: a few times an hour is plenty
_MAINTENANCE_INTERVAL_S = 600.0


@dataclass
class AgentCounters:
    frames_processed: int = 0
    frames_quarantined: int = 0
    spool_errors: int = 0
    model_load_failures: int = 0


def resolve_model(path: Path, keyring: Path) -> ModelSource:
    """The model to load: a bundle is verified first (signature, hashes, nothing unlisted)."""
    try:
        return model_source.resolve_model(path, keyring)
    except BundleError as exc:
        raise ModelLoadError(f"refusing model bundle: {exc}") from exc


def load_detector(config: AgentConfig, counters: AgentCounters) -> Detector:
    """The configured model; the packaged one if that cannot be loaded (a trap must keep working)."""
    model = config.model
    try:
        model_file = resolve_model(model.path, trusted_keyring(config))
        return Detector(model_file, model.backend, model.threads, model.conf_threshold, model.iou_threshold)
    except ModelLoadError as exc:
        counters.model_load_failures += 1
        if not model.fallback_to_packaged or model.path == PACKAGED_MODEL:
            raise
        log.error("cannot load model %s (%s); running the packaged model instead", model.path, exc)
        packaged = resolve_model(PACKAGED_MODEL, PACKAGED_KEYRING)
        return Detector(packaged, "auto", model.threads, model.conf_threshold, model.iou_threshold)


class Agent:
    def __init__(self, config: AgentConfig, source: FrameSource | None = None) -> None:
        self.config = config
        self.counters = AgentCounters()
        self.started = time.monotonic()
        self.last_error: str | None = None
        # the keys bundles are verified with: seeded from the provisioned keyring, then changed
        # only by signed statements on cmd/keys (edge/key_rotation.py)
        self.key_store = KeyringStore(trust_dir(config)) if config.keys.rotation else None
        if self.key_store is not None:
            self.key_store.seed(config.model.keyring)
        # the active model slot if an update installed one, else the configured model
        self.updates = ModelUpdates(config, __version__)
        self.detector = self.updates.boot(lambda: load_detector(config, self.counters))
        self.spool = DetectionSpool(
            config.spool.path,
            config.spool.max_bytes,
            config.spool.policy,
            config.spool.synchronous,
            config.spool.dead_letter_max_bytes,
        )
        self.last_error = self.spool.reset_reason
        rehome_spool(self.spool, config.mqtt.prefix, config.device_id)
        # "<device>:<installation>": ids never repeat across reinstalls (a fresh spool, a new id)
        self.id_prefix = f"{config.device_id}:{self.spool.installation_id}"
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
            self.id_prefix,
        )
        self.publisher = MqttPublisher(config.mqtt, config.device_id, self.spool, self._status)
        self.uploader = PictureUploader(config.upload, self.spool)
        removed = self.spool.remove_orphan_uploads()
        if removed:
            log.info("removed %d picture(s) left behind by an interrupted frame", removed)
        # a daily sample of boxes just below the threshold (the server looks for missed animals)
        wanted = config.upload.mode != "none" and config.upload.candidates.per_day > 0
        self.candidates = CandidateSampler(config.upload.candidates, self.spool) if wanted else None
        # the camera's static false positives (server: reviewers' "not an animal")
        self.ignore_regions = IgnoreRegionMemory(config.spool.path.parent / "ignore-regions.json")
        # THE registration point for downlink commands: topic kind -> handler. The dispatcher
        # (edge/downlink.py) receives `<prefix>/<device>/cmd/#`, validates each command against the
        # contract and calls its handler with it (None: the server cleared a retained command);
        # what it cannot use is reported on `ota`.
        self.key_rotation = (
            KeyRotationHandler(self.key_store, self.spool_ota, self.updates.keyring_changed)
            if self.key_store is not None
            else None
        )
        self.command_handlers: dict[TopicKind, CommandHandler] = {
            "cmd/ignore-regions": self._ignore_regions_command,
            **self.updates.handlers(),  # cmd/model
        }
        if self.key_rotation is not None:
            self.command_handlers["cmd/keys"] = self.key_rotation.on_command
        self.downlink = Downlink(
            MqttCommandLink(config.mqtt, config.device_id),
            CommandDispatcher(
                config.mqtt.prefix, config.device_id, self.command_handlers, self._command_error
            ),
        )
        self.stop_event = threading.Event()
        self.died: list[str] = []  # worker threads found dead while running
        self._watchdog_s: float | None = None
        self._next_heartbeat = self._next_watchdog = 0.0
        self._next_maintenance = time.monotonic() + _MAINTENANCE_INTERVAL_S
        self._was_connected = False
        # decode -> spooled, the last frames only (benchmarks read it; the agent runs for months)
        self.frame_ms: deque[float] = deque(maxlen=1000)
        self.last_inference_ms = 0.0
        self.scene = self._load_scene()
        self.view: ViewCheck | None = None
        self._next_scene_check = 0.0
        self.deployment_reporter = self._deployment_reporter()

    def _load_scene(self) -> SceneReference | None:
        scene = self.config.scene
        if scene.reference is None:
            return None
        try:
            reference = decode_image(scene.reference.read_bytes(), self.config.max_image_pixels)
        except (OSError, BadImageError) as exc:
            log.error("no tamper check: cannot read the reference photo %s (%s)", scene.reference, exc)
            return None
        return SceneReference(reference, scene.shifted_below, scene.blocked_below)

    def _deployment_reporter(self) -> DeploymentReporter | None:
        record, url, token = self.config.deployment_file, self.config.upload.url, self.config.upload.token()
        if record is None or not url or not token:
            return None
        return DeploymentReporter(url, token.get_secret_value(), record, self.config.scene.reference)

    def _check_scene(self, image: np.ndarray, night: bool) -> None:
        """Now and then, a daytime frame against the reference photo (tamper, drift)."""
        now = time.monotonic()
        if self.scene is None or night or now < self._next_scene_check:
            return
        self._next_scene_check = now + self.config.scene.check_interval_s
        result = self.scene.compare(image)
        self.view = ViewCheck(
            state=result.state,
            features_in_place=result.features_in_place,
            detail=result.detail,
            checked_at=utc_now(),
        )
        if result.state != "ok":
            log.warning(
                "the camera's view is %s (features in place %.2f, detail %.2f): check the trap",
                result.state,
                result.features_in_place,
                result.detail,
            )

    def _topic(self, kind: TopicKind) -> str:
        return topic(self.config.mqtt.prefix, self.config.device_id, kind)

    def _status(self, state: DeviceState, timestamped: bool) -> bytes:
        return StatusMessage(
            state=state,
            ts=utc_now() if timestamped else None,
            agent_version=__version__,
            model=self.detector.info.ref,
        ).to_json()

    def _retarget_decoder(self) -> None:
        """Decode for the running model: its input size (reduced decode) and, with prefetch, its
        input tensor. Called again when an update switches the model."""
        info = self.detector.info
        prepare = self.detector.prepare if self.config.pipeline.prefetch else None
        self.decoder.retarget(info.input_width, info.input_height, prepare)

    # --- one frame --------------------------------------------------------------------------
    def process(self, frame: Frame) -> None:
        self.process_decoded(self.decoder.decode(frame))

    def process_decoded(self, decoded: DecodedFrame) -> None:
        started = time.perf_counter()
        frame, image = decoded.frame, decoded.image
        if image is None:
            self._quarantine(frame, decoded.error or "not decoded")
            return
        if decoded.target is not self.decoder.target:
            # decoded for the model before an update switched it: decode again for this one
            decoded = self.decoder.decode(frame)
            image = decoded.image
            if image is None:
                self._quarantine(frame, decoded.error or "not decoded")
                return
        if decoded.tensor is not None and decoded.letterbox is not None:
            result = self.detector.detect_prepared(decoded.tensor, decoded.letterbox)
        else:
            result = self.detector.detect(image)
        self.last_inference_ms = result.inference_ms
        # the scene check and the ignore regions' looks work on the model's (maybe reduced) pixels
        self._check_scene(image, decoded.night)
        detections, demoted = self.ignore_regions.apply(image, result.detections)
        if demoted:
            log.info("%s: %d detection(s) demoted as known static false positives", frame.name, len(demoted))
        saved_bursts = copy.deepcopy(self.bursts.state)
        sequence_id, frame_index, closed = self.bursts.add(frame.captured_at, detections)
        frame_number = self._frame_counter + 1
        processed_at = utc_now()
        message = DetectionMessage(
            id=f"{self.id_prefix}:{frame_number:09d}",
            device_id=self.config.device_id,
            captured_at=frame.captured_at,
            processed_at=processed_at,
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
            detections=detections,
            clock_unsynced=clock_unsynced(frame.captured_at, processed_at),
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
            pictures = self._pictures(message.id, decoded, detections)
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
        if self.candidates is not None:
            self._sample_candidates(self.candidates, message, decoded, result)
        self.frame_ms.append((time.perf_counter() - started) * 1000.0)
        self.publisher.notify()
        if pictures:
            self.uploader.notify()
        log.debug(
            "%s: %d detection(s) in %.1f ms",
            frame.name,
            len(detections),
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
        if self.config.privacy.blur_people and any(d.category == "person" for d in detections):
            # the site's rule: nothing identifiable leaves the trap, the full frame included
            image = blur_boxes(image, detections)
            data = encode_jpeg(image)
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
                # on disk before the spool row that points at it commits; a crash before the
                # commit leaves an orphan, removed at start
                write_synced(path, blob)
            if pending:
                fsync_dir(self.spool.uploads_dir)
        except OSError:
            for written in pending:  # a full disk: leave nothing half done behind
                written.path.unlink(missing_ok=True)
            raise
        return pending

    def _sample_candidates(
        self, sampler: CandidateSampler, message: DetectionMessage, decoded: DecodedFrame, result: FrameResult
    ) -> None:
        """Best effort, after the frame is safely spooled: a lost candidate is only a smaller sample.
        Crops are cut from the full-resolution photo, decoded only when there is a weak box."""
        below = self.detector.below_threshold(result, sampler.config.floor)
        image = decoded.full_image() if below else decoded.image
        if image is None:
            return
        below, _ = self.ignore_regions.apply(image, below, count=False)  # a known stump is no animal
        if self.config.privacy.blur_people:  # the site's rule holds for candidates too, weak boxes included
            image = blur_boxes(image, [*message.detections, *below])
        try:
            if sampler.offer(message.id, message.captured_at, image, below, message.detections):
                self.uploader.notify()
        except (SpoolError, OSError) as exc:
            log.warning("could not keep the candidate crops of %s: %s", message.id, exc)

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

    def _ignore_regions_command(self, command: BaseModel | None) -> None:
        if command is None:
            log.info("the server cleared cmd/ignore-regions; keeping the remembered regions")
            return
        if not isinstance(command, IgnoreRegionsCommand):
            raise TypeError(f"expected an IgnoreRegionsCommand, got {type(command).__name__}")
        self.ignore_regions.handle(command.to_json())

    def _command_error(self, kind: TopicKind | None, reason: str) -> None:
        """A command that could not be used: reported on `ota` by the part it was meant for."""
        if kind == "cmd/keys" and self.key_rotation is not None:
            self.key_rotation.command_error(reason)
        else:
            self.updates.command_error(kind, reason)

    # --- what model updates need (trapline.edge.ota.updater.UpdateHost) -------------------------
    def spool_ota(self, payload: bytes) -> None:
        self.spool.put([OutboundMessage(self._topic("ota"), payload)])
        self.publisher.notify()

    def frame_times(self) -> tuple[int, list[float]]:
        return self.counters.frames_processed, list(self.frame_ms)

    def model_switched(self) -> None:
        self.bursts.categories = self.detector.info.category_names
        self._retarget_decoder()
        self.publisher.publish_now("status", self._status("online", True))

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
            last_error=(self.last_error or self.publisher.last_error or self.uploader.last_error or None),
            dead_letters=self.spool.dead_letter_count,
            rehomed=rehomed_total(self.spool),
            spool_resets=self.spool.resets,
            view=self.view,
        )

    def run(self, drain_timeout_s: float = float("inf")) -> int:
        """Process frames until stopped or the source is exhausted; then drain the spool.
        Returns 1 when a worker thread died (the watchdog is no longer fed), else 0."""
        self.publisher.start()
        self.uploader.start()
        self.updates.start(self)
        self.downlink.start()
        if self.deployment_reporter is not None:
            self.deployment_reporter.start()
        sd_notify("READY=1")
        self._watchdog_s = watchdog_interval_s()
        exhausted = False
        try:
            frames = self.source.frames(self.stop_event, self.spool.is_processed)
            for decoded in prefetched(frames, self.decoder, self.config.pipeline.prefetch):
                if decoded is not None:
                    with self.updates.model_lock:  # a model switch waits for the frame in progress
                        self.process_decoded(decoded)
                self._spool_summary(self.bursts.close_if_idle(datetime.now(UTC)))
                if not self._timed_work():
                    break
            exhausted = not self.stop_event.is_set() and not self.died
        finally:
            self.source.close()
            self._spool_summary(self.bursts.close())
            if exhausted and self.candidates is not None:  # nothing more will come: send the sample
                try:
                    self.candidates.flush()
                    self.uploader.notify()
                except (SpoolError, OSError) as exc:
                    log.warning("could not queue the candidate crops: %s", exc)
            if exhausted:
                log.info(
                    "source exhausted; waiting for %d spooled message(s) to be sent",
                    self.spool.depth,
                )
                self._wait_drained(drain_timeout_s)
            sd_notify("STOPPING=1")
            self.downlink.stop()
            self.updates.stop()
            if self.deployment_reporter is not None:
                self.deployment_reporter.stop()
            self.uploader.stop()
            self.publisher.stop("stopped")
            self.spool.close()
        log.info(
            "stopped: %d frames processed, %d quarantined, %d messages unsent",
            self.counters.frames_processed,
            self.counters.frames_quarantined,
            self.spool.depth,
        )
        return 1 if self.died else 0

    def _timed_work(self) -> bool:
        """Heartbeat (also right after the link comes up), maintenance, watchdog. False: a worker
        thread died and there is no watchdog to notice: stop."""
        now = time.monotonic()
        connected = self.publisher.connected
        if connected and (now >= self._next_heartbeat or not self._was_connected):
            self.publisher.publish_now("heartbeat", self.heartbeat().to_json())
            self._next_heartbeat = now + self.config.heartbeat_interval_s
        self._was_connected = connected
        if now >= self._next_maintenance:
            self._maintain()
            self._next_maintenance = now + _MAINTENANCE_INTERVAL_S
        if now >= self._next_watchdog:
            if not self._feed_watchdog(self._watchdog_s):
                return False
            self._next_watchdog = now + (self._watchdog_s or 1.0)
        return True

    @property
    def dead_threads(self) -> list[str]:
        """Worker threads that should run and do not (each one's loop survives errors, so a dead
        one is a bug: a restart is the cure)."""
        dead = [] if self.publisher.alive else ["mqtt"]
        if self.uploader.enabled and not self.uploader.alive:
            dead.append("uploader")
        if not self.updates.alive:
            dead.append("model-updates")
        if not self.downlink.alive:
            dead.append("command link")
        return dead

    def _feed_watchdog(self, watchdog_s: float | None) -> bool:
        """WATCHDOG=1 only while every worker thread lives; False: stop the agent (no watchdog)."""
        dead = self.dead_threads
        if not dead:
            if watchdog_s:
                sd_notify("WATCHDOG=1")
            return True
        if dead != self.died:
            self.died = dead
            self.last_error = f"thread died: {', '.join(dead)}"
            log.critical(
                "worker thread(s) %s died; %s",
                ", ".join(dead),
                "no longer feeding the watchdog: systemd restarts the agent"
                if watchdog_s
                else "stopping (exit status 1) so that whatever runs the agent restarts it",
            )
        return bool(watchdog_s)

    def _maintain(self) -> None:
        """Bounded growth: forget old "frame done" marks of frames that are gone; shrink the file."""
        try:
            forgotten = self.spool.prune_processed(
                self.config.spool.processed_keep_days * 86400, self.source.still_present
            )
            freed = self.spool.vacuum()
        except SpoolError as exc:
            log.warning("spool maintenance failed (will try again): %s", exc)
            return
        if forgotten or freed:
            log.info("spool maintenance: forgot %d frame mark(s), freed %d page(s)", forgotten, freed)

    def _wait_drained(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while self.spool.depth > 0 and not self.stop_event.is_set() and time.monotonic() < deadline:
            if not self._timed_work():
                return
            self.stop_event.wait(0.1)

    def stop(self) -> None:
        self.stop_event.set()
