"""One record per image: what it is, where and when it was taken, and its labels."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from trapline.contracts import CATEGORIES

DEFAULT_CLASSES = CATEGORIES


class LabelBox(BaseModel):
    model_config = ConfigDict(extra="forbid")

    category: str
    bbox: tuple[float, float, float, float] = Field(description="MegaDetector convention, 0-1")
    conf: float | None = Field(None, description="detector confidence; None for human labels")
    source: str = Field(description="where the label came from")
    derived: bool = Field(
        False, description="made by this pipeline from a teacher model's output, not by a person"
    )
    coco_class: str | None = Field(
        None, description="the COCO class the COCO teacher gives this box (label_space: coco)"
    )


class ImageRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str = Field("", description="the collection (dataset spec source) the image comes from")
    file: str = Field(description="path relative to its source's image root")
    sha256: str
    width: int
    height: int
    captured_at: datetime | None = Field(None, description="EXIF time (camera local, no zone)")
    camera: str | None = Field(None, description="EXIF make and model")
    site: str
    night: bool
    species: list[str] = Field(default_factory=list)
    boxes: list[LabelBox] = Field(default_factory=list)
    labelled: bool = Field(False, description="some label source covers this image")
    ambiguous: bool = Field(
        False, description="boxes incomplete or unsure: kept out of box training and box metrics"
    )
    sequence: str = Field("", description="burst/sequence group; splits never cut one")
    present: list[str] | None = Field(
        None,
        description="detector classes that a label made without the teacher says are in the image"
        " ([] = verified empty); None = not known",
    )
    present_source: str | None = Field(None, description="where `present` comes from: human or file name")
    teacher_only: bool = Field(
        False, description="no label but the teacher's: its boxes, or its emptiness, are model output"
    )

    @property
    def empty(self) -> bool:
        return self.labelled and not self.boxes and not self.ambiguous

    @property
    def primary_class(self) -> str:
        """The class used for balancing: a species if known, else the box category, else empty."""
        if self.species:
            return self.species[0]
        if self.boxes:
            return self.boxes[0].category
        return "empty"


def record_key(record: ImageRecord) -> str:
    """The record's unique key: its file, prefixed by its source when it has one."""
    return f"{record.source}/{record.file}" if record.source else record.file


def write_jsonl(records: list[ImageRecord], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        for record in records:
            handle.write(record.model_dump_json() + "\n")


def read_jsonl(path: Path) -> list[ImageRecord]:
    return [ImageRecord.model_validate_json(line) for line in path.read_text().splitlines() if line]


def write_parquet(records: list[ImageRecord], path: Path, splits: dict[str, str] | None = None) -> None:
    """A flat table (one row per image) for pandas/duckdb users; boxes as a JSON column."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = []
    for record in records:
        row = record.model_dump(exclude={"boxes", "species"})
        row["species"] = ";".join(record.species)
        row["boxes"] = json.dumps([b.model_dump() for b in record.boxes])
        row["box_count"] = len(record.boxes)
        row["split"] = (splits or {}).get(record.file)
        rows.append(row)
    pq.write_table(pa.Table.from_pylist(rows), path)
