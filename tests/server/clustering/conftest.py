"""A server database holding real camera-trap photos with their MegaDetector boxes, as traps would
have sent them: one trap per subset (site), the original frames uploaded (one subset sends only
thumbnails), species known from the development set's table."""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import pytest
from sqlalchemy.orm import Session, sessionmaker

from tests.conftest import CAMTRAP, needs_shared
from tests.server.conftest import settings_for
from trapline.server.api.routes.media import store_bytes
from trapline.server.core.config import ServerSettings
from trapline.server.db import make_engine, session_factory, transaction
from trapline.server.migrate import upgrade
from trapline.server.models import Detection, DetectionFrame, Device, Media

SUBSETS = ("jaguar", "buow", "southwest")
THUMBNAIL_SUBSET = "southwest"


@dataclass
class Fleet:
    settings: ServerSettings
    sessions: sessionmaker[Session]
    species: dict[int, str]  # detection id -> species (development set's table)
    boxes: int


def load_fleet(settings: ServerSettings, sessions: sessionmaker[Session], min_conf: float = 0.5) -> Fleet:
    camtrap = needs_shared(CAMTRAP)
    md = json.loads((camtrap / "megadetector.json").read_text())
    species_of: dict[str, set[str]] = {}
    with (camtrap / "species.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            species_of.setdefault(row["file"], set()).add(row["species"])
    meta = {
        json.loads(line)["file"]: json.loads(line)
        for line in (camtrap / "metadata.jsonl").read_text().splitlines()
    }
    species: dict[int, str] = {}
    start = datetime(2026, 5, 1, tzinfo=UTC)
    with transaction(sessions) as session:
        for subset in SUBSETS:
            session.add(Device(id=f"trap-{subset}", state="online"))
    count = 0
    with transaction(sessions) as session:
        for number, image in enumerate(sorted(md["images"], key=lambda i: i["file"])):
            subset = image["file"].split("/")[0]
            boxes = [
                d for d in image.get("detections") or [] if d["category"] == "1" and d["conf"] >= min_conf
            ]
            if subset not in SUBSETS or not boxes:
                continue
            path = camtrap / "images" / image["file"]
            data = path.read_bytes()
            info = meta[f"images/{image['file']}"]
            device = f"trap-{subset}"
            frame_id = f"{device}:{number:09d}"
            when = start + timedelta(hours=number)
            session.add(DetectionFrame(
                id=frame_id, device_id=device, captured_at=when, processed_at=when, received_at=when,
                sequence_id=f"{device}:seq:{number:09d}", frame_index=0, image_file=image["file"],
                image_sha256=hashlib.sha256(data).hexdigest(), width=info["width"], height=info["height"],
                night=bool(info["grayscale"]), model_name="trapline-nano", model_version="1", inference_ms=10.0,
                detection_count=len(boxes), max_conf=max(b["conf"] for b in boxes), categories=",animal,",
            ))  # fmt: skip
            session.flush()
            for box in boxes:
                det = Detection(frame_id=frame_id, category="animal", conf=box["conf"], x=box["bbox"][0],
                                y=box["bbox"][1], w=min(box["bbox"][2], 1 - box["bbox"][0]),
                                h=min(box["bbox"][3], 1 - box["bbox"][1]))  # fmt: skip
                session.add(det)
                session.flush()
                names = species_of.get(f"images/{image['file']}", set()) - {"empty"}
                if len(names) == 1:
                    species[det.id] = names.pop()
                count += 1
            kind = "frame"
            if subset == THUMBNAIL_SUBSET:
                picture = cv2.imread(str(path))
                assert picture is not None
                scale = 640 / max(picture.shape[:2])
                small = cv2.resize(picture, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
                data, kind = cv2.imencode(".jpg", small)[1].tobytes(), "thumbnail"
            digest, _ = store_bytes(settings.media_dir, data)
            session.add(Media(sha256=digest, device_id=device, kind=kind, detection_id=frame_id,
                              content_type="image/jpeg", bytes=len(data), uploaded_at=when))  # fmt: skip
    return Fleet(settings, sessions, species, count)


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    url = f"sqlite:///{tmp_path / 'trapline.sqlite'}"
    upgrade(url)
    settings = settings_for(url, tmp_path, clustering_min_conf=0.5, feature_chunk_size=16, feature_batch_size=8,
                            feature_extractor="yolo-backbone")  # fmt: skip
    engine = make_engine(url)
    yield load_fleet(settings, session_factory(engine))
    engine.dispose()
