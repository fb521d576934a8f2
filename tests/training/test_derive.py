from __future__ import annotations

import pytest

from trapline.training.derive import Teacher, choose_threshold, derive
from trapline.training.records import ImageRecord, LabelBox

BOX = (0.1, 0.1, 0.3, 0.3)
ELSEWHERE = (0.6, 0.6, 0.2, 0.2)


def _record(
    file: str, present: list[str] | None, source: str = "human", boxes: list[LabelBox] | None = None
) -> ImageRecord:
    return ImageRecord(
        file=file, sha256=file.ljust(64, "0"), width=100, height=100, site="s", night=False,
        present=present, present_source=source if present is not None else None,
        labelled=present is not None or bool(boxes), boxes=boxes or [],
    )  # fmt: skip


def _teachers(animal: dict[str, list[tuple[str, float, tuple[float, float, float, float]]]],
              other: dict[str, list[tuple[str, float, tuple[float, float, float, float]]]] | None = None) -> list[Teacher]:  # fmt: skip
    return [
        Teacher("mdlite", ("animal",), animal, 0.5, 0.1),
        Teacher("coco", ("person", "vehicle"), other or {}, 0.3, 0.1),
    ]


def test_verified_empties_stay_empty_and_labelled_animals_get_teacher_boxes_marked_derived() -> None:
    empty = _record("empty.jpg", [])
    deer = _record("deer.jpg", ["animal"])
    shy = _record("shy.jpg", ["animal"])  # the teacher is unsure of it
    teachers = _teachers({
        "empty.jpg": [("animal", 0.45, BOX)],  # a stump: must not become a label
        "deer.jpg": [("animal", 0.8, BOX), ("animal", 0.2, ELSEWHERE)],
        "shy.jpg": [("animal", 0.3, BOX)],
    })  # fmt: skip
    counts = derive([empty, deer, shy], teachers)
    assert empty.boxes == [] and not empty.ambiguous and empty.empty
    [box] = deer.boxes
    assert (box.category, box.conf, box.derived, box.source) == ("animal", 0.8, True, "teacher:mdlite")
    assert shy.ambiguous and not shy.boxes  # no confident box: out of box training, kept for image level
    assert counts["verified empty"] == 1 and counts["labelled, no teacher box"] == 1


def test_vehicles_take_the_coco_teachers_boxes_not_megadetector_lites() -> None:
    truck = _record("truck.jpg", ["vehicle"])
    teachers = _teachers(
        {"truck.jpg": [("animal", 0.8, BOX)]},
        {"truck.jpg": [("vehicle", 0.7, BOX), ("person", 0.6, ELSEWHERE)]},
    )
    derive([truck], teachers)
    assert sorted(b.category for b in truck.boxes) == ["person", "vehicle"]  # the rider is a person
    assert not truck.ambiguous


def test_human_boxes_and_megadetector_labels_are_left_alone() -> None:
    human = _record("h.jpg", ["animal"], boxes=[LabelBox(category="animal", bbox=BOX, source="yolo")])
    md = _record(
        "md.jpg", None, boxes=[LabelBox(category="animal", bbox=BOX, conf=0.9, source="megadetector")]
    )
    derive(
        [human, md],
        _teachers({"h.jpg": [("animal", 0.9, ELSEWHERE)], "md.jpg": [("animal", 0.9, ELSEWHERE)]}),
    )
    assert [b.source for b in human.boxes] == ["yolo"]
    assert [b.source for b in md.boxes] == ["megadetector"]


def test_unlabelled_photos_are_decided_by_the_teachers() -> None:
    records = [_record(name, None) for name in ("boxed.jpg", "person.jpg", "quiet.jpg", "unsure.jpg")]
    teachers = _teachers(
        {
            "boxed.jpg": [("animal", 0.7, BOX)],
            "person.jpg": [("animal", 0.8, BOX)],  # MegadetectorLite boxes people as animals
            "quiet.jpg": [("animal", 0.05, BOX)],
            "unsure.jpg": [("animal", 0.3, BOX)],
        },
        {"person.jpg": [("person", 0.9, (0.11, 0.1, 0.3, 0.3))]},
    )
    derive(records, teachers)
    boxed, person, quiet, unsure = records
    assert all(r.teacher_only and r.labelled for r in records)
    assert [b.category for b in boxed.boxes] == ["animal"] and boxed.boxes[0].derived
    assert [b.category for b in person.boxes] == ["person"]  # the overlapping COCO person wins
    assert quiet.empty
    assert unsure.ambiguous


def test_teacher_threshold_is_chosen_on_human_labels_outside_test() -> None:
    records = [_record(f"a{i}.jpg", ["animal"]) for i in range(6)] + [
        _record(f"e{i}.jpg", []) for i in range(4)
    ]
    records.append(_record("truck.jpg", ["vehicle"]))  # not a negative for the animal teacher
    records.append(_record("t.jpg", []))  # in test: never used
    records.append(_record("n.jpg", ["animal"], source="file name"))  # not human: not used
    scores = {**{f"a{i}.jpg": 0.6 + 0.05 * i for i in range(6)}, "a0.jpg": 0.3,
              **{f"e{i}.jpg": 0.1 * i for i in range(4)}, "truck.jpg": 0.9, "t.jpg": 0.95, "n.jpg": 0.01}  # fmt: skip
    teacher = Teacher("mdlite", ("animal",), {k: [("animal", v, BOX)] for k, v in scores.items()}, 0.0, 0.1)
    choice = choose_threshold(teacher, records, {"t.jpg": "test"})
    assert (choice.positives, choice.negatives) == (6, 4)
    # the empties reach 0.3; above it every animal but a0 is found: balanced accuracy 11/12 from 0.35 to
    # 0.65, and the highest threshold within 0.01 of the best is chosen
    assert choice.threshold == pytest.approx(0.65)


def test_no_threshold_without_both_kinds_of_photos() -> None:
    teacher = Teacher("mdlite", ("animal",), {}, 0.0, 0.1)
    with pytest.raises(ValueError, match="cannot choose"):
        choose_threshold(teacher, [_record("a.jpg", ["animal"])], {})


def test_coco_label_space_names_each_box_by_the_coco_teachers_class() -> None:
    from trapline.training.label_space import assign_coco_classes

    deer = _record(
        "deer.jpg",
        ["animal"],
        boxes=[LabelBox(category="animal", bbox=BOX, source="teacher:t", derived=True)],
    )
    fox = _record(
        "fox.jpg", ["animal"], boxes=[LabelBox(category="animal", bbox=ELSEWHERE, source="teacher:t")]
    )
    truck = _record(
        "truck.jpg", ["vehicle"], boxes=[LabelBox(category="vehicle", bbox=BOX, source="teacher:c")]
    )
    seen = {
        "deer.jpg": [(BOX, "person", 0.9), (BOX, "cow", 0.6), ((0.12, 0.1, 0.3, 0.3), "horse", 0.8)],
        "fox.jpg": [(BOX, "dog", 0.9)],  # elsewhere: no match
    }
    categories = {"cow": "animal", "horse": "animal", "dog": "animal", "person": "person", "truck": "vehicle"}
    used = assign_coco_classes([deer, fox, truck], seen, categories)  # type: ignore[arg-type]
    assert deer.boxes[0].coco_class == "cow"  # the best-overlapping animal class, not the person
    assert fox.boxes[0].coco_class == "cow"  # unseen: the most frequent animal class so far
    assert truck.boxes[0].coco_class == "car"  # no vehicle class seen at all: the fallback
    assert used == {"cow": 2, "car": 1}
