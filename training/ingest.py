"""Read a folder of camera-trap images and the label files users already have.

Label sources, merged per image:
- MegaDetector batch output (1.x): boxes with conf >= `md_threshold` become labels; an image whose
  only boxes lie between `md_ignore_below` and the threshold is *ambiguous* (probably an animal
  the detector was unsure of) and is kept out of training rather than taught as empty.
- COCO Camera Traps JSON: boxes (pixels), species from the category, location as the site,
  seq_id as the sequence.
- YOLO txt files (one per image, same stem) with their class names.
- A species CSV (`file,species`).
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np
from PIL import ExifTags, Image, UnidentifiedImageError
from tqdm import tqdm

from trapline.contracts import MEGADETECTOR_CATEGORIES
from trapline.edge.imaging import is_night
from trapline.training.boxes import clip_md, coco_to_md, yolo_to_md
from trapline.training.records import ImageRecord, LabelBox

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
# how a species or category name becomes one of the detector's classes
PERSON_NAMES = {"person", "human", "people"}
VEHICLE_NAMES = {"vehicle", "car", "truck", "motorcycle"}
EMPTY_NAMES = {"empty", "blank", "none", "nothing"}


def detector_class(name: str) -> str | None:
    lowered = name.strip().lower()
    if lowered in EMPTY_NAMES:
        return None
    if lowered in PERSON_NAMES:
        return "person"
    if lowered in VEHICLE_NAMES:
        return "vehicle"
    return "animal"


@dataclass
class Labels:
    boxes: list[LabelBox] = field(default_factory=list)
    species: list[str] = field(default_factory=list)
    labelled: bool = False
    ambiguous: bool = False
    site: str | None = None
    sequence: str | None = None


def _exif(path: Path) -> tuple[datetime | None, str | None]:
    try:
        with Image.open(path) as image:
            exif = image.getexif()
    except (UnidentifiedImageError, OSError):
        return None, None
    sub = exif.get_ifd(ExifTags.IFD.Exif)
    raw = sub.get(ExifTags.Base.DateTimeOriginal) or exif.get(ExifTags.Base.DateTime)
    captured = None
    if isinstance(raw, str):
        try:
            captured = datetime.strptime(raw.strip("\x00 "), "%Y:%m:%d %H:%M:%S")
        except ValueError:
            captured = None
    make = str(exif.get(ExifTags.Base.Make, "")).strip("\x00 ")
    model = str(exif.get(ExifTags.Base.Model, "")).strip("\x00 ")
    camera = " ".join(part for part in (make, model) if part) or None
    return captured, camera


def read_megadetector(path: Path, threshold: float, ignore_below: float) -> dict[str, Labels]:
    data = json.loads(path.read_text())
    names = data.get("detection_categories", MEGADETECTOR_CATEGORIES)
    labels: dict[str, Labels] = {}
    for image in data["images"]:
        if "failure" in image and image.get("detections") is None:
            continue
        entry = Labels(labelled=True)
        unsure = False
        for det in image.get("detections") or []:
            if det["conf"] >= threshold:
                box = clip_md(tuple(det["bbox"]))
                entry.boxes.append(
                    LabelBox(
                        category=names[det["category"]], bbox=box, conf=det["conf"], source="megadetector"
                    )
                )
            elif det["conf"] >= ignore_below:
                unsure = True
        # only unsure boxes: probably an animal the detector doubted; never teach it as empty
        entry.ambiguous = unsure and not entry.boxes
        labels[image["file"]] = entry
    return labels


def read_coco_camtraps(path: Path) -> dict[str, Labels]:
    data = json.loads(path.read_text())
    categories = {c["id"]: c["name"] for c in data["categories"]}
    images = {i["id"]: i for i in data["images"]}
    labels: dict[str, Labels] = {
        i["file_name"]: Labels(
            labelled=True,
            site=str(i["location"]) if i.get("location") is not None else None,
            sequence=str(i["seq_id"]) if i.get("seq_id") else None,
        )
        for i in data["images"]
    }
    for ann in data.get("annotations", []):
        image = images[ann["image_id"]]
        entry = labels[image["file_name"]]
        name = categories[ann["category_id"]]
        if name.lower() not in EMPTY_NAMES and name not in entry.species:
            entry.species.append(name)
        cls = detector_class(name)
        if cls is not None and ann.get("bbox"):
            box = clip_md(coco_to_md(tuple(ann["bbox"]), image["width"], image["height"]))
            entry.boxes.append(LabelBox(category=cls, bbox=box, source="coco-camtraps"))
    return labels


def read_yolo_labels(folder: Path, class_names: list[str], files: Iterable[str]) -> dict[str, Labels]:
    """YOLO txt labels named like each image's stem, under `folder` (flat or mirroring)."""
    labels: dict[str, Labels] = {}
    for file in files:
        stem = Path(file).stem
        candidates = [folder / Path(file).with_suffix(".txt"), folder / f"{stem}.txt"]
        txt = next((c for c in candidates if c.is_file()), None)
        if txt is None:
            continue
        entry = Labels(labelled=True)
        for line_no, line in enumerate(txt.read_text().splitlines(), 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 5:
                raise ValueError(f"{txt}:{line_no}: expected 'class cx cy w h', got {line!r}")
            cls = int(parts[0])
            box = clip_md(yolo_to_md(tuple(float(v) for v in parts[1:])))  # type: ignore[arg-type]
            entry.boxes.append(LabelBox(category=class_names[cls], bbox=box, source="yolo"))
        labels[file] = entry
    return labels


def read_species_csv(path: Path, root: Path) -> dict[str, list[str]]:
    """`file,species` rows; files relative to the CSV's folder, returned relative to `root`."""
    species: dict[str, list[str]] = {}
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            file = (path.parent / row["file"]).resolve()
            try:
                key = file.relative_to(root.resolve()).as_posix()
            except ValueError:
                key = row["file"]
            name = row["species"].strip()
            names = species.setdefault(key, [])
            if name and name.lower() not in EMPTY_NAMES:
                names.append(name)
    return species


def _lookup(table: dict[str, Labels], root_relative: str, strip: str | None) -> Labels | None:
    if root_relative in table:
        return table[root_relative]
    if strip and root_relative.startswith(strip):
        return table.get(root_relative[len(strip) :])
    return None


def ingest(
    root: Path,
    megadetector: Path | None = None,
    md_threshold: float = 0.8,
    md_ignore_below: float = 0.1,
    md_prefix: str | None = None,
    coco: Path | None = None,
    yolo_labels: Path | None = None,
    yolo_classes: list[str] | None = None,
    species_csv: Path | None = None,
    site_depth: int = 1,
) -> list[ImageRecord]:
    """Records for every readable image below `root`; unreadable ones are logged and skipped.

    `md_prefix`: MegaDetector `file` values are relative to `root/md_prefix` (e.g. "images/").
    """
    files = sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    md = read_megadetector(megadetector, md_threshold, md_ignore_below) if megadetector else {}
    coco_labels = read_coco_camtraps(coco) if coco else {}
    yolo = read_yolo_labels(yolo_labels, yolo_classes or [], files) if yolo_labels else {}
    species = read_species_csv(species_csv, root) if species_csv else {}
    records = []
    for file in tqdm(files, desc="reading images", unit="img"):
        path = root / file
        data = path.read_bytes()
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            log.warning("skipping %s: not a decodable image", file)
            continue
        captured, camera = _exif(path)
        parts = Path(file).parts
        site = "/".join(parts[:site_depth]) if len(parts) > site_depth else "default"
        record = ImageRecord(
            file=file,
            sha256=hashlib.sha256(data).hexdigest(),
            width=image.shape[1],
            height=image.shape[0],
            captured_at=captured,
            camera=camera,
            site=site,
            night=is_night(image),
            species=list(species.get(file, [])),
        )
        # later sources are more trusted: human labels (COCO, YOLO) replace detector boxes
        sources = (
            (_lookup(md, file, md_prefix), False),
            (coco_labels.get(file), True),
            (yolo.get(file), True),
        )
        for source, human in sources:
            if source is None:
                continue
            record.labelled = True
            if human or source.boxes or not record.boxes:
                record.boxes = list(source.boxes)
                record.ambiguous = source.ambiguous
            record.species = record.species or list(source.species)
            record.site = source.site or record.site
            record.sequence = source.sequence or record.sequence
        records.append(record)
    return records
