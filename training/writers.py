"""Write a prepared dataset as an Ultralytics YOLO dataset (txt + data.yaml) and Pascal VOC XML."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from xml.etree import ElementTree as ET

import yaml

from trapline.training.boxes import md_to_voc, md_to_yolo
from trapline.training.records import ImageRecord, LabelBox, record_key

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def dataset_name(record: ImageRecord) -> str:
    """A flat, unique, shell-friendly file name: source, site folder, original stem, a hash prefix."""
    stem = _UNSAFE.sub("_", Path(record_key(record)).with_suffix("").as_posix().replace("/", "__"))
    return f"{stem}-{record.sha256[:8]}{Path(record.file).suffix.lower()}"


def _place(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() or target.is_symlink():
        target.unlink()
    try:
        os.link(source, target)  # no copy on the same file system
    except OSError:
        shutil.copyfile(source, target)


def image_path(record: ImageRecord, image_root: Path | Mapping[str, Path]) -> Path:
    root = image_root if isinstance(image_root, Path) else image_root[record.source]
    return root / record.file


def write_yolo_dataset(
    records: list[ImageRecord],
    splits: dict[str, str],
    image_root: Path | Mapping[str, Path],
    out: Path,
    classes: list[str],
    label_of: Callable[[LabelBox], str] | None = None,
) -> Path:
    """Images (hard links) and YOLO txt labels per split; ambiguous photos (incomplete boxes) are
    left out, since Ultralytics would learn their unboxed animals as background."""
    index = {name: i for i, name in enumerate(classes)}
    for stale in ("images", "labels"):  # a rebuilt dataset must not keep the last build's photos
        shutil.rmtree(out / stale, ignore_errors=True)
    for record in records:
        if record.ambiguous:
            continue
        split_name = splits[record_key(record)]
        name = dataset_name(record)
        _place(image_path(record, image_root), out / "images" / split_name / name)
        lines = []
        for box in record.boxes:
            class_name = label_of(box) if label_of else box.category
            if class_name in index:
                cx, cy, w, h = md_to_yolo(box.bbox)
                lines.append(f"{index[class_name]} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}")
        label = out / "labels" / split_name / Path(name).with_suffix(".txt")
        label.parent.mkdir(parents=True, exist_ok=True)
        label.write_text("\n".join(lines) + ("\n" if lines else ""))
    data_yaml = out / "data.yaml"
    data_yaml.write_text(
        yaml.safe_dump(
            {
                "path": str(out.resolve()),
                "train": "images/train",
                "val": "images/val",
                "test": "images/test",
                "names": dict(enumerate(classes)),
            },
            sort_keys=False,
        )
    )
    return data_yaml


def write_voc(records: list[ImageRecord], splits: dict[str, str], out: Path) -> None:
    annotations = out / "voc" / "Annotations"
    shutil.rmtree(annotations, ignore_errors=True)
    annotations.mkdir(parents=True, exist_ok=True)
    for record in records:
        if record.ambiguous:
            continue
        root = ET.Element("annotation")
        ET.SubElement(root, "folder").text = splits[record_key(record)]
        ET.SubElement(root, "filename").text = dataset_name(record)
        size = ET.SubElement(root, "size")
        for tag, value in (("width", record.width), ("height", record.height), ("depth", 3)):
            ET.SubElement(size, tag).text = str(value)
        for box in record.boxes:
            obj = ET.SubElement(root, "object")
            ET.SubElement(obj, "name").text = box.category
            ET.SubElement(obj, "difficult").text = "0"
            bndbox = ET.SubElement(obj, "bndbox")
            corners = md_to_voc(box.bbox, record.width, record.height)
            for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), corners, strict=True):
                ET.SubElement(bndbox, tag).text = str(value)
        ET.indent(root)
        target = annotations / Path(dataset_name(record)).with_suffix(".xml")
        ET.ElementTree(root).write(target, encoding="unicode")
