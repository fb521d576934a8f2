"""Reviewers' labels on crops: a species, "not an animal" or "unsure", for one crop or a cluster.

Rows are never changed or deleted: a correction is a newer row, and a crop's label is its newest
row (who and when stay visible, and the history is kept).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from trapline.server.clustering.crops import CANDIDATE_KIND
from trapline.server.models import ClusterMember, CropLabel, Detection, Media
from trapline.server.queries import rows_where_in

NOT_AN_ANIMAL = "not an animal"
UNSURE = "unsure"
SPECIAL_LABELS = (NOT_AN_ANIMAL, UNSURE)
LABEL_MAX = 200


def normalise_label(label: str) -> str:
    """Species names in lower case, single spaces; refuses empty or overlong names."""
    cleaned = " ".join(label.strip().lower().split())
    if not cleaned or len(cleaned) > LABEL_MAX or any(ord(ch) < 32 for ch in cleaned):
        raise ValueError(f"a label is 1-{LABEL_MAX} printable characters")
    return cleaned


def is_species(label: str) -> bool:
    return label not in SPECIAL_LABELS


def crop_key(label: CropLabel | ClusterMember) -> str:
    return f"d{label.detection_id}" if label.detection_id is not None else f"m{label.media_id}"


def _split(keys: Iterable[str]) -> tuple[list[int], list[int]]:
    dets: list[int] = []
    media: list[int] = []
    for key in keys:
        if len(key) < 2 or key[0] not in "dm" or not key[1:].isdigit():
            raise ValueError(f"{key!r} is not a crop key (d<detection id> or m<media id>)")
        (dets if key[0] == "d" else media).append(int(key[1:]))
    return dets, media


def current_labels(session: Session, keys: Sequence[str] | None = None) -> dict[str, CropLabel]:
    """The newest label of each crop (of `keys`, or of every labelled crop)."""
    newest = (
        select(func.max(CropLabel.id)).group_by(CropLabel.detection_id, CropLabel.media_id).scalar_subquery()
    )
    query = select(CropLabel).where(CropLabel.id.in_(newest))
    if keys is not None:
        dets, media = _split(keys)
        found: dict[str, CropLabel] = {}
        for column, ids in ((CropLabel.detection_id, dets), (CropLabel.media_id, media)):
            for start in range(0, len(ids), 5000):
                for row in session.scalars(query.where(column.in_(ids[start : start + 5000]))):
                    found[crop_key(row)] = row
        return found
    return {crop_key(row): row for row in session.scalars(query)}


def label_crops(
    session: Session,
    keys: Sequence[str],
    label: str,
    user: str,
    run_id: str | None = None,
    cluster: int | None = None,
) -> list[CropLabel]:
    """Label crops (a correction is just a newer label). The caller commits."""
    label = normalise_label(label)
    dets, media = _split(keys)
    now = datetime.now(UTC)
    rows = [CropLabel(detection_id=d, label=label, labelled_by=user, labelled_at=now, run_id=run_id,
                      cluster=cluster) for d in dets]  # fmt: skip
    rows += [CropLabel(media_id=m, label=label, labelled_by=user, labelled_at=now, run_id=run_id,
                       cluster=cluster) for m in media]  # fmt: skip
    session.add_all(rows)
    session.flush()
    return rows


def cluster_keys(session: Session, run_id: str, cluster: int) -> list[str]:
    members = session.scalars(
        select(ClusterMember)
        .where(ClusterMember.run_id == run_id, ClusterMember.cluster == cluster)
        .order_by(ClusterMember.rank)
    )
    return [crop_key(m) for m in members]


def label_cluster(
    session: Session, run_id: str, cluster: int, label: str, user: str, exclude: Sequence[str] = ()
) -> list[CropLabel]:
    """Label every crop of a cluster but the excluded ones."""
    keys = cluster_keys(session, run_id, cluster)
    if not keys:
        raise LookupError(f"run {run_id} has no cluster {cluster}")
    skip = set(exclude)
    return label_crops(session, [k for k in keys if k not in skip], label, user, run_id, cluster)


@dataclass(frozen=True)
class ReviewedFrames:
    """The current reviewers' labels on some frames: per box, and per labelled candidate crop."""

    boxes: dict[int, CropLabel]  # detection id -> its current label
    candidates: dict[str, list[tuple[Media, CropLabel]]]  # frame id -> labelled candidate crops

    def species(self) -> set[str]:
        labels = [*self.boxes.values(), *(lab for pairs in self.candidates.values() for _, lab in pairs)]
        return {lab.label for lab in labels if is_species(lab.label)}


def reviewed_frames(session: Session, boxes: Mapping[str, Sequence[Detection]]) -> ReviewedFrames:
    """What reviewers said about the boxes and candidate crops of these frames (exports)."""
    frame_ids = list(boxes)
    box_labels = current_labels(session, [f"d{det.id}" for dets in boxes.values() for det in dets])
    candidates = list(
        rows_where_in(
            session, select(Media).where(Media.kind == CANDIDATE_KIND).order_by(Media.id), Media.detection_id,
            frame_ids,
        )
    )  # fmt: skip
    candidate_labels = current_labels(session, [f"m{m.id}" for m in candidates])
    by_frame: dict[str, list[tuple[Media, CropLabel]]] = {}
    for media in candidates:
        label = candidate_labels.get(f"m{media.id}")
        if label is not None and media.detection_id is not None:
            by_frame.setdefault(media.detection_id, []).append((media, label))
    return ReviewedFrames(
        {int(key[1:]): lab for key, lab in box_labels.items()},
        by_frame,
    )
