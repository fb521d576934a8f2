from __future__ import annotations

import json
from pathlib import Path

from trapline.export.calibration import calibration_photos
from trapline.training.records import ImageRecord, LabelBox, write_jsonl


def test_calibration_takes_day_night_and_empty_in_equal_shares(tmp_path: Path) -> None:
    box = LabelBox(category="animal", bbox=(0.1, 0.1, 0.2, 0.2), source="yolo")
    records = []
    for i in range(30):
        kind = ("day", "night", "empty")[i % 3] if i < 12 else "day"  # 4 night, 4 empty, 22 day
        records.append(ImageRecord(
            file=f"{kind}{i}.jpg", sha256=str(i).ljust(64, "0"), width=10, height=10, site="s",
            night=kind == "night", labelled=True, boxes=[] if kind == "empty" else [box],
        ))  # fmt: skip
    records.append(records[0].model_copy(update={"file": "val.jpg", "sha256": "v".ljust(64, "0")}))
    write_jsonl(records, tmp_path / "records.jsonl")
    splits = {r.file: "train" for r in records} | {"val.jpg": "val"}
    (tmp_path / "splits.json").write_text(json.dumps(splits))
    (tmp_path / "sources.json").write_text(json.dumps({"": str(tmp_path)}))
    (tmp_path / "data.yaml").write_text("names: {0: animal}\n")
    chosen = [p.name for p in calibration_photos(tmp_path, count=12)]
    assert len(chosen) == 12 and "val.jpg" not in chosen
    assert sum(n.startswith("night") for n in chosen) == 4  # all there are
    assert sum(n.startswith("empty") for n in chosen) == 4
    assert sum(n.startswith("day") for n in chosen) == 4
    assert len(calibration_photos(tmp_path, count=20)) == 20  # the day photos fill the others' shares
