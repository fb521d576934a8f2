"""A dataset built from several photo collections: what `trapline train prepare --spec` reads.

One YAML file names the collections (each a folder of photos with the label files it has), how
photos map to sites (location/camera), the teachers that derive boxes where only image-level
labels exist, and which sites are held out for validation and test. Paths are relative to the
`--data-root` given on the command line (the shared data folder by default).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from trapline.training.records import DEFAULT_CLASSES


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SourceSpec(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="short name; prefixes the source's sites")
    images: Path = Field(description="folder of photos; its first sub-folder names the site")
    megadetector: Path | None = Field(None, description="MegaDetector batch JSON (model output)")
    yolo_labels: Path | None = Field(None, description="folder of YOLO txt labels (same stems)")
    yolo_classes: list[str] = Field(default_factory=list, description="class names of the YOLO labels")
    yolo_labels_kind: Literal["human", "megadetector"] = Field(
        "human", description="who made the YOLO labels (MegaDetector boxes are model output)"
    )
    species: Path | None = Field(None, description="CSV file,species[,source] (names from files/folders)")
    image_labels: Path | None = Field(None, description="CSV file,label,label_kind (image-level)")
    metadata: Path | None = Field(None, description="JSON lines with `file` and per-photo fields")
    site_field: str | None = Field(
        None, description="metadata field naming the camera within a site folder (e.g. camera_overlay_id)"
    )


class TeacherSpec(_Strict):
    model: Path = Field(description="the teacher model file (relative to the data root, or absolute)")
    kind: Literal["yolox", "yolov8"] = Field(description="yolox: MegadetectorLite; yolov8: a trap model")
    classes: list[str] = Field(description="the detector classes this teacher's boxes are trusted for")
    threshold: float | Literal["auto"] = Field(
        "auto",
        description="boxes at or above become labels; auto: the best balanced accuracy on the"
        " human image-level labels of the train and val sites",
    )
    ignore_below: float = Field(
        0.1, ge=0, le=1, description="on unlabelled photos, boxes below this are noise; between: unsure"
    )


class SplitSpec(_Strict):
    test_sites: list[str] = Field(default_factory=list, description="sites held out for test")
    val_sites: list[str] = Field(default_factory=list, description="sites held out for validation")
    fractions: tuple[float, float, float] = Field(
        (0.64, 0.16, 0.20), description="train/val/test shares when no sites are named"
    )
    seed: int = 0


class DatasetSpec(_Strict):
    classes: list[str] = Field(default_factory=lambda: [str(c) for c in DEFAULT_CLASSES])
    label_space: Literal["classes", "coco"] = Field(
        "classes",
        description="classes: train on `classes`; coco: train in the COCO teacher's 80 classes (each box"
        " takes the COCO class that teacher gives it), so the pretrained head, class branch included,"
        " is kept and the manifest maps COCO classes onto animal/person/vehicle",
    )
    sources: list[SourceSpec] = Field(min_length=1)
    site_aliases: dict[str, str] = Field(
        default_factory=dict, description="site -> site it is the same location as"
    )
    teachers: list[TeacherSpec] = Field(default_factory=list)
    md_threshold: float = Field(0.5, ge=0, le=1, description="MegaDetector boxes at or above are labels")
    md_ignore_below: float = Field(0.1, ge=0, le=1, description="MegaDetector boxes below are ignored")
    burst_gap_s: float = Field(1.0, ge=0, description="thin training photos closer than this (s)")
    sequence_gap_s: float = Field(
        60.0, gt=0, description="photos of one camera closer than this: one sequence"
    )
    split: SplitSpec = Field(default_factory=SplitSpec)
    contact_sheet_sample: int = Field(40, ge=0, description="photos per contact-sheet kind")

    @model_validator(mode="after")
    def _unique_sources(self) -> DatasetSpec:
        names = [s.name for s in self.sources]
        if len(set(names)) != len(names):
            raise ValueError(f"source names must be unique: {names}")
        overlap = set(self.split.test_sites) & set(self.split.val_sites)
        if overlap:
            raise ValueError(f"sites both in test and val: {sorted(overlap)}")
        return self

    @classmethod
    def read(cls, path: Path) -> DatasetSpec:
        return cls.model_validate(yaml.safe_load(path.read_text()))

    def resolved(self, data_root: Path) -> DatasetSpec:
        """The spec with every relative path made relative to `data_root`."""

        def fix(path: Path | None) -> Path | None:
            return path if path is None or path.is_absolute() else data_root / path

        sources = [
            source.model_copy(
                update={
                    key: fix(getattr(source, key))
                    for key in (
                        "images",
                        "megadetector",
                        "yolo_labels",
                        "species",
                        "image_labels",
                        "metadata",
                    )
                }
            )
            for source in self.sources
        ]
        teachers = [t.model_copy(update={"model": fix(t.model)}) for t in self.teachers]
        return self.model_copy(update={"sources": sources, "teachers": teachers})
