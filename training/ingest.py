"""Read a folder of camera-trap images and the label files users already have.

Label sources, merged per image:
- MegaDetector batch output (1.x): boxes with conf >= `md_threshold` become labels; an image whose
  only boxes lie between `md_ignore_below` and the threshold is *ambiguous* (probably an animal
  the detector was unsure of) and is kept out of training rather than taught as empty.
- COCO Camera Traps JSON: boxes (pixels), species from the category, location as the site,
  seq_id as the sequence.
- YOLO txt files (one per image, same stem) with their class names, made by people or converted
  from MegaDetector output (then treated as model output).
- A species CSV (`file,species[,source]`): names from the source's files or folders.
- An image-level label CSV (`file,label,label_kind`): what a person (or a file name) says the photo
  shows, e.g. 20 verified empties; rows whose kind is model output are not image-level truth.
- A metadata JSON-lines file (`file` plus fields), e.g. the camera name that splits a site.

`present` records what a label made without our teacher says is in the photo (`[]`: verified
empty), with its provenance; teacher boxes are derived later (training.derive).
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
    kind: str = "human"  # human, or megadetector (model output)


@dataclass
class ImageLevel:
    """What an image-level label says: detector classes present ([] = empty), and who said it."""

    classes: set[str] = field(default_factory=set)
    source: str = "human"
    names: list[str] = field(default_factory=list)


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


def read_yolo_labels(
    folder: Path, class_names: list[str], files: Iterable[str], kind: str = "human"
) -> dict[str, Labels]:
    """YOLO txt labels named like each image's stem, under `folder` (flat or mirroring)."""
    labels: dict[str, Labels] = {}
    source = "yolo" if kind == "human" else "megadetector (yolo txt)"
    for file in files:
        stem = Path(file).stem
        candidates = [folder / Path(file).with_suffix(".txt"), folder / f"{stem}.txt"]
        txt = next((c for c in candidates if c.is_file()), None)
        if txt is None:
            continue
        entry = Labels(labelled=True, kind=kind)
        for line_no, line in enumerate(txt.read_text().splitlines(), 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 5:
                raise ValueError(f"{txt}:{line_no}: expected 'class cx cy w h', got {line!r}")
            cls = int(parts[0])
            box = clip_md(yolo_to_md(tuple(float(v) for v in parts[1:])))  # type: ignore[arg-type]
            entry.boxes.append(LabelBox(category=class_names[cls], bbox=box, source=source))
        labels[file] = entry
    return labels


def _root_relative(file: str, table: Path, root: Path) -> str:
    """A file named in a table, relative to `root`: tables name files relative to their own
    folder (camtrap-dev) or to the image root (camtrap-train)."""
    try:
        return (table.parent / file).resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return file


def read_species_csv(path: Path, root: Path) -> dict[str, list[str]]:
    """`file,species` rows; files relative to the CSV's folder, returned relative to `root`."""
    species: dict[str, list[str]] = {}
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            key = _root_relative(row["file"], path, root)
            name = row["species"].strip()
            names = species.setdefault(key, [])
            if name and name.lower() not in EMPTY_NAMES:
                names.append(name)
    return species


def _label_source(kind: str) -> str | None:
    """Provenance of an image-level label from its `label_kind`; None: not image-level truth."""
    lowered = kind.lower()
    if "megadetector" in lowered or "model" in lowered:
        return None
    if "human" in lowered:
        return "human"
    if "name" in lowered:
        return "file name"
    return None


def _add_level(table: dict[str, ImageLevel], key: str, name: str, source: str) -> None:
    entry = table.setdefault(key, ImageLevel(source=source))
    cls = detector_class(name)
    if cls is not None:
        entry.classes.add(cls)
        entry.names.append(name)


def read_image_labels(path: Path, root: Path) -> dict[str, ImageLevel]:
    """`file,label,label_kind` rows that are image-level truth (human or file-name labels)."""
    table: dict[str, ImageLevel] = {}
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            source = _label_source(row.get("label_kind", "human"))
            label = row["label"].strip()
            if source is None or not label or label.lower() == "unknown":
                continue
            _add_level(table, _root_relative(row["file"], path, root), label, source)
    return table


def species_image_levels(path: Path, root: Path) -> dict[str, ImageLevel]:
    """The species CSV as image-level labels: names come from the source's files or folders."""
    table: dict[str, ImageLevel] = {}
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            _add_level(table, _root_relative(row["file"], path, root), row["species"].strip(), "file name")
    return table


def read_metadata(path: Path, root: Path) -> dict[str, dict[str, object]]:
    """`file` -> the JSON object describing it."""
    table: dict[str, dict[str, object]] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            table[_root_relative(str(row["file"]), path, root)] = row
    return table


def _reconcile(record: ImageRecord, level: ImageLevel | None) -> None:
    """Apply what an image-level label says to the boxes of a (possibly machine-labelled) record.

    A verified empty has no boxes (MegaDetector boxes there are false positives: hard negatives).
    When the label names only animals, MegaDetector's person/vehicle boxes are re-categorised as
    animal (it calls burrowing owls "person"). A class the label names without a box leaves the
    record ambiguous until a teacher derives its box.
    """
    if level is None:
        return
    record.present = sorted(level.classes)
    record.present_source = level.source
    record.labelled = True
    if not level.classes:
        record.boxes = []
        record.ambiguous = False
        return
    if level.classes == {"animal"}:
        record.boxes = [
            b.model_copy(update={"category": "animal", "source": f"{b.source} (category from image label)"})
            if b.category != "animal" and b.source.startswith("megadetector")
            else b
            for b in record.boxes
        ]
    boxed = {b.category for b in record.boxes}
    record.ambiguous = record.ambiguous or not level.classes <= boxed


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
    image_labels: Path | None = None,
    metadata: Path | None = None,
    site_field: str | None = None,
    yolo_labels_kind: str = "human",
    source_name: str = "",
) -> list[ImageRecord]:
    """Records for every readable image below `root`; unreadable ones are logged and skipped.

    `md_prefix`: MegaDetector `file` values are relative to `root/md_prefix` (e.g. "images/").
    `source_name` prefixes sites; `site_field` (a metadata field) splits a site folder by camera.
    """
    files = sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    md = read_megadetector(megadetector, md_threshold, md_ignore_below) if megadetector else {}
    coco_labels = read_coco_camtraps(coco) if coco else {}
    yolo = read_yolo_labels(yolo_labels, yolo_classes or [], files, yolo_labels_kind) if yolo_labels else {}
    species = read_species_csv(species_csv, root) if species_csv else {}
    levels = species_image_levels(species_csv, root) if species_csv else {}
    if image_labels:
        levels.update(read_image_labels(image_labels, root))
    meta = read_metadata(metadata, root) if metadata else {}
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
        if site_field and site_field in meta.get(file, {}):
            site = f"{site}/{meta[file][site_field] or 'unknown'}"
        if source_name:
            site = f"{source_name}/{site}"
        record = ImageRecord(
            source=source_name,
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
        yolo_entry = yolo.get(file)
        sources = (
            (_lookup(md, file, md_prefix), False),
            (coco_labels.get(file), True),
            (yolo_entry, yolo_entry is not None and yolo_entry.kind == "human"),
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
        level = levels.get(file)
        if level is None and any(b.source in ("yolo", "coco-camtraps") for b in record.boxes):
            # people drew every box: what they boxed is what the photo shows
            level = ImageLevel({b.category for b in record.boxes}, "human")
        _reconcile(record, level)
        records.append(record)
    return records
