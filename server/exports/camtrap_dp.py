"""Camtrap DP 1.0.2 export: deployments, media and observations of the fleet, for ecologists.

The columns come from the official table schemas shipped beside this module
(`camtrap-dp-1.0.2/`, copied unchanged from tdwg/camtrap-dp), and `validate_folder` checks a package
against the official profile and table schemas with frictionless, offline.

Everything is built as generators over frames read in chunks, so an export of a year of a fleet
never sits in memory: `package_entries` yields the package's files in order (descriptor, the three
tables, then the uploaded pictures) and `stream_zip` writes them into any binary stream.

What ecologists ask of it:
- one observation per box, with its bbox (`bboxX/Y/Width/Height`, MegaDetector's top-left
  convention, as Camtrap DP has it), and a `blank` observation for a frame without boxes;
- `classificationMethod`/`classifiedBy`: `machine` and the model name and version that made the
  call, or `human` and the biologist who labelled the frame or the whole sequence;
- a box a reviewer labelled (the learning loop's review pages) gets a second, `human`
  observation beside the machine's, with the same bbox, the reviewer and when: the species; or
  `blank` for "not an animal" (a false detection) and `unknown` for "unsure", said in
  `observationComments`. A labelled below-threshold candidate crop is a `human` media-level
  observation (its box is not known to the server);
- `eventID` is the burst (sequence) a picture belongs to, `eventStart`/`eventEnd` its bounds; each
  closed sequence also gets event-level observations (per category: the most individuals seen in
  one frame, and the best confidence);
- deployments with their coordinates; frames outside every deployment with coordinates are left
  out and counted (`skipped_frames`).
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path, PurePosixPath
from typing import IO, Any

from sqlalchemy import and_, exists, func, select
from sqlalchemy.orm import Session

from trapline.contracts import as_category
from trapline.server.exports.zip_stream import zip_chunks
from trapline.server.learning.labels import NOT_AN_ANIMAL, UNSURE, current_labels, is_species, reviewed_frames
from trapline.server.models import CropLabel, Deployment, DetectionFrame, Label, Media, Sequence
from trapline.server.queries import boxes_by_frame, frames_in, media_by_frame, picture, rows_where_in

VERSION = "1.0.2"
SCHEMA_DIR = Path(__file__).parent / f"camtrap-dp-{VERSION}"
BASE_URL = f"https://raw.githubusercontent.com/tdwg/camtrap-dp/{VERSION}"
PROFILE = "camtrap-dp-profile.json"
TABLES = ("deployments", "media", "observations")
# the contract's categories as Camtrap DP's observationType
OBSERVATION_TYPE = {"animal": "animal", "person": "human", "vehicle": "vehicle"}
# a biologist's label that says nothing is there
BLANK_LABELS = frozenset({"blank", "empty", "nothing", "none"})
_CHUNK = 1000
_EXTENSIONS = {"image/jpeg": ".jpg", "image/png": ".png"}


class CamtrapExportError(ValueError):
    """The export cannot be made as asked (the message says what to do)."""


@cache
def table_schema(name: str) -> dict[str, Any]:
    """The official Table Schema of `name` (deployments, media or observations)."""
    schema: dict[str, Any] = json.loads((SCHEMA_DIR / f"{name}-table-schema.json").read_text())
    return schema


def columns(name: str) -> list[str]:
    return [field["name"] for field in table_schema(name)["fields"]]


def _ts(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _safe_path(path: str) -> str:
    """A trap's file name as Camtrap DP's relative `filePath` (no leading '/', '.' or '~', no '..')."""
    parts = [p for p in PurePosixPath(path.replace("\\", "/")).parts if p not in ("/", ".", "..", "")]
    cleaned = "/".join(parts).lstrip(".~") or "unnamed"
    return cleaned


class _DeploymentIndex:
    """The deployments with coordinates, by trap, to place each frame (deployments are few)."""

    def __init__(self, session: Session, since: datetime | None, until: datetime | None) -> None:
        query = (
            select(Deployment)
            .where(Deployment.latitude.is_not(None), Deployment.longitude.is_not(None))
            .order_by(Deployment.device_id, Deployment.start)
        )
        if until is not None:
            query = query.where(Deployment.start < until)
        if since is not None:
            query = query.where((Deployment.end.is_(None)) | (Deployment.end > since))
        self.rows = list(session.scalars(query))
        self._by_device: dict[str, list[Deployment]] = {}
        for row in self.rows:
            self._by_device.setdefault(row.device_id, []).append(row)

    def find(self, device_id: str, at: datetime) -> Deployment | None:
        for row in self._by_device.get(device_id, ()):
            if row.start <= at and (row.end is None or at < row.end):
                return row
        return None


def deployment_id(deployment: Deployment) -> str:
    return f"{deployment.device_id}-{deployment.id}"


def _inside_a_deployment() -> Any:
    return exists().where(
        and_(
            Deployment.device_id == DetectionFrame.device_id,
            Deployment.start <= DetectionFrame.captured_at,
            (Deployment.end.is_(None)) | (DetectionFrame.captured_at < Deployment.end),
            Deployment.latitude.is_not(None),
            Deployment.longitude.is_not(None),
        )
    )


def skipped_frames(session: Session, since: datetime | None, until: datetime | None) -> int:
    """Frames in the range that no deployment with coordinates covers (left out of the export)."""
    query = select(func.count()).select_from(DetectionFrame).where(~_inside_a_deployment())
    if since is not None:
        query = query.where(DetectionFrame.captured_at >= since)
    if until is not None:
        query = query.where(DetectionFrame.captured_at < until)
    return int(session.scalar(query) or 0)


@dataclass
class _Chunk:
    frames: list[tuple[DetectionFrame, Deployment]]
    media: dict[str, dict[str, Media]]


def _chunks(
    session: Session, index: _DeploymentIndex, since: datetime | None, until: datetime | None
) -> Iterator[list[tuple[DetectionFrame, Deployment]]]:
    """Frames inside a deployment, oldest first per trap, `_CHUNK` at a time (keyset, not OFFSET)."""
    last: tuple[str, datetime, str] | None = None
    while True:
        query = frames_in(since, until).order_by(None)
        query = query.order_by(DetectionFrame.device_id, DetectionFrame.captured_at, DetectionFrame.id)
        if last is not None:
            device, stamp, key = last
            query = query.where(
                (DetectionFrame.device_id > device)
                | ((DetectionFrame.device_id == device) & (DetectionFrame.captured_at > stamp))
                | (
                    (DetectionFrame.device_id == device)
                    & (DetectionFrame.captured_at == stamp)
                    & (DetectionFrame.id > key)
                )
            )
        rows = list(session.scalars(query.limit(_CHUNK)))
        if not rows:
            return
        last = (rows[-1].device_id, rows[-1].captured_at, rows[-1].id)
        placed = [(f, d) for f in rows if (d := index.find(f.device_id, f.captured_at)) is not None]
        if placed:
            yield placed
        session.expunge_all()  # keep the session's identity map from growing with the export


def _picture_path(item: Media | None, media_dir: Path) -> tuple[str, Path] | None:
    """(path in the package, file on disk) of an uploaded whole-frame picture, if it is stored."""
    if item is None:
        return None
    source = media_dir / item.sha256[:2] / item.sha256
    if not source.is_file():
        return None
    return f"media/{item.sha256}{_EXTENSIONS.get(item.content_type, '.jpg')}", source


def deployment_rows(
    session: Session, since: datetime | None, until: datetime | None
) -> Iterator[dict[str, Any]]:
    now = datetime.now(UTC)
    for dep in _DeploymentIndex(session, since, until).rows:
        end = dep.end or max(dep.start, min(until, now) if until else now)
        yield {
            "deploymentID": deployment_id(dep),
            "locationID": dep.location_name,
            "locationName": dep.location_name,
            "latitude": dep.latitude,
            "longitude": dep.longitude,
            "deploymentStart": _ts(dep.start),
            "deploymentEnd": _ts(end),
            "cameraID": dep.device_id,
            "cameraModel": "Trapline camera trap",
            "timestampIssues": "false",
        }


def media_rows(
    session: Session, media_dir: Path, since: datetime | None, until: datetime | None
) -> Iterator[dict[str, Any]]:
    index = _DeploymentIndex(session, since, until)
    for chunk in _chunks(session, index, since, until):
        media = media_by_frame(session, [f.id for f, _ in chunk])
        for frame, dep in chunk:
            best = picture(media[frame.id])
            stored = _picture_path(best, media_dir)
            yield {
                "mediaID": frame.id,
                "deploymentID": deployment_id(dep),
                "captureMethod": "activityDetection",
                "timestamp": _ts(frame.captured_at),
                # an uploaded picture travels in the package; otherwise it is on the trap's card
                "filePath": stored[0] if stored else _safe_path(frame.image_file),
                "filePublic": "false",
                "fileName": PurePosixPath(frame.image_file).name,
                "fileMediatype": best.content_type if stored and best else "image/jpeg",
            }


def _labels(session: Session, frame_ids: list[str], sequence_ids: list[str]) -> list[Label]:
    labels = list(rows_where_in(session, select(Label).order_by(Label.id), Label.frame_id, frame_ids))
    labels += rows_where_in(session, select(Label).order_by(Label.id), Label.sequence_id, sequence_ids)
    return labels


def _human(label: Label) -> dict[str, Any]:
    blank = label.species.strip().lower() in BLANK_LABELS
    return {
        "observationType": "blank" if blank else "animal",
        "scientificName": None if blank else label.species,
        "classificationMethod": "human",
        "classifiedBy": label.labelled_by,
        "classificationTimestamp": _ts(label.labelled_at),
    }


def _reviewed(label: CropLabel, what: str) -> dict[str, Any]:
    """A reviewer's label of one box or candidate crop as a human observation."""
    if label.label == NOT_AN_ANIMAL:
        kind, name, comment = "blank", None, f"reviewer: not an animal ({what} is a false detection)"
    elif label.label == UNSURE:
        kind, name, comment = "unknown", None, f"reviewer: unsure what {what} shows"
    else:
        kind, name, comment = "animal", label.label, f"reviewer labelled {what}"
    return {
        "observationType": kind,
        "scientificName": name,
        "count": 1 if kind == "animal" else None,
        "classificationMethod": "human",
        "classifiedBy": label.labelled_by,
        "classificationTimestamp": _ts(label.labelled_at),
        "observationComments": comment,
    }


def observation_rows(
    session: Session, since: datetime | None, until: datetime | None
) -> Iterator[dict[str, Any]]:
    index = _DeploymentIndex(session, since, until)
    events_done: set[str] = set()  # one set of event-level observations per sequence
    for chunk in _chunks(session, index, since, until):
        frame_ids = [f.id for f, _ in chunk]
        sequence_ids = sorted({f.sequence_id for f, _ in chunk} - events_done)
        boxes = boxes_by_frame(session, frame_ids)
        sequences = {s.id: s for s in rows_where_in(session, select(Sequence), Sequence.id, sequence_ids)}
        labels = _labels(session, frame_ids, sequence_ids)
        reviewed = reviewed_frames(session, boxes)
        for frame, dep in chunk:
            seq = sequences.get(frame.sequence_id)
            start, end = (seq.first_frame_at, seq.last_frame_at) if seq else (frame.captured_at,) * 2
            machine = {
                "classificationMethod": "machine",
                "classifiedBy": f"{frame.model_name} {frame.model_version}",
                "classificationTimestamp": _ts(frame.processed_at),
            }
            common = {
                "deploymentID": deployment_id(dep),
                "eventID": frame.sequence_id,
                "eventStart": _ts(start),
                "eventEnd": _ts(end),
            }
            media_level = {**common, "mediaID": frame.id, "observationLevel": "media"}
            if not boxes[frame.id]:
                yield {
                    "observationID": f"{frame.id}:blank",
                    **media_level,
                    "observationType": "blank",
                    **machine,
                }
            for number, det in enumerate(boxes[frame.id]):
                bbox = {
                    "bboxX": round(det.x, 6),
                    "bboxY": round(det.y, 6),
                    "bboxWidth": max(round(det.w, 6), 1e-6),
                    "bboxHeight": max(round(det.h, 6), 1e-6),
                }
                yield {
                    "observationID": f"{frame.id}:{number}",
                    **media_level,
                    "observationType": OBSERVATION_TYPE.get(det.category, "unknown"),
                    "count": 1,
                    **bbox,
                    **machine,
                    "classificationProbability": round(det.conf, 6),
                }
                review = reviewed.boxes.get(det.id)
                if review is not None:
                    yield {
                        "observationID": f"{frame.id}:{number}:review",
                        **media_level,
                        **bbox,
                        **_reviewed(review, f"the {det.category} box"),
                    }
            for media, review in reviewed.candidates.get(frame.id, []):
                yield {
                    "observationID": f"{frame.id}:candidate-{media.id}",
                    **media_level,
                    **_reviewed(review, f"below-threshold candidate crop {media.sha256[:12]}"),
                }
            for label in labels:
                if label.frame_id == frame.id:
                    yield {"observationID": f"{frame.id}:label-{label.id}", **media_level, **_human(label)}
            if frame.sequence_id in events_done or seq is None:
                continue
            events_done.add(frame.sequence_id)
            event_level = {**common, "observationLevel": "event"}
            for category, summary in sorted(seq.categories.items()):
                if as_category(category) is None:
                    continue
                yield {
                    "observationID": f"{seq.id}:{category}",
                    **event_level,
                    "observationType": OBSERVATION_TYPE[category],
                    "count": max(int(summary.get("max_count", 1)), 1),
                    **machine,
                    "classificationProbability": round(float(summary.get("best_conf", 0.0)), 6),
                }
            for label in labels:
                if label.sequence_id == seq.id:
                    yield {"observationID": f"{seq.id}:label-{label.id}", **event_level, **_human(label)}


def media_files(
    session: Session, media_dir: Path, since: datetime | None, until: datetime | None
) -> Iterator[tuple[str, Path]]:
    """(path in the package, file on disk) of each uploaded picture the media table points at."""
    index = _DeploymentIndex(session, since, until)
    sent: set[str] = set()  # identical pictures of two frames are one file
    for chunk in _chunks(session, index, since, until):
        media = media_by_frame(session, [f.id for f, _ in chunk])
        for frame, _ in chunk:
            stored = _picture_path(picture(media[frame.id]), media_dir)
            if stored and stored[0] not in sent:
                sent.add(stored[0])
                yield stored


def _spatial(deployments: list[Deployment]) -> dict[str, Any]:
    lons = [d.longitude for d in deployments if d.longitude is not None]
    lats = [d.latitude for d in deployments if d.latitude is not None]
    if len(set(zip(lons, lats, strict=True))) == 1:
        return {"type": "Point", "coordinates": [lons[0], lats[0]]}
    west, east, south, north = min(lons), max(lons), min(lats), max(lats)
    ring = [[west, south], [east, south], [east, north], [west, north], [west, south]]
    return {"type": "Polygon", "bbox": [west, south, east, north], "coordinates": [ring]}


def descriptor(session: Session, since: datetime | None, until: datetime | None) -> dict[str, Any]:
    """datapackage.json. CamtrapExportError when no deployment with coordinates covers the range."""
    deployments = _DeploymentIndex(session, since, until).rows
    if not deployments:
        raise CamtrapExportError(
            "no deployment with coordinates covers this time range: record where each trap stands"
            " (POST /api/v1/deployments) before exporting Camtrap DP"
        )
    now = datetime.now(UTC)
    first = min(d.start for d in deployments)
    last = max(d.end or now for d in deployments)
    species = set(session.scalars(select(Label.species).distinct()))
    species |= {lab.label for lab in current_labels(session).values() if is_species(lab.label)}
    taxa = [{"scientificName": name} for name in sorted(species) if name.strip().lower() not in BLANK_LABELS]
    return {
        "profile": f"{BASE_URL}/{PROFILE}",
        "name": "trapline-export",
        "title": "Trapline camera-trap fleet export",
        "created": _ts(now),
        "contributors": [{"title": "Trapline fleet", "role": "publisher"}],
        "sources": [{"title": "Trapline", "version": "0.1.0"}],
        "project": {
            "title": "Trapline camera-trap fleet",
            "samplingDesign": "opportunistic",
            "captureMethod": ["activityDetection"],
            "individualAnimals": False,
            "observationLevel": ["media", "event"],
        },
        "spatial": _spatial(deployments),
        "temporal": {
            "start": max(first, since).date().isoformat() if since else first.date().isoformat(),
            "end": min(last, until).date().isoformat() if until else last.date().isoformat(),
        },
        "taxonomic": taxa,
        "resources": [
            {
                "name": name,
                "path": f"{name}.csv",
                "profile": "tabular-data-resource",
                "format": "csv",
                "mediatype": "text/csv",
                "encoding": "utf-8",
                "schema": f"{BASE_URL}/{name}-table-schema.json",
            }
            for name in TABLES
        ],
    }


def csv_chunks(name: str, rows: Iterable[dict[str, Any]], batch: int = 500) -> Iterator[bytes]:
    """The table's CSV (header from the official schema), a few hundred rows per chunk."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns(name), lineterminator="\n", extrasaction="raise")
    writer.writeheader()
    pending = 0
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
        pending += 1
        if pending >= batch:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
            pending = 0
    yield buffer.getvalue().encode()


@dataclass(frozen=True)
class Entry:
    """One file of the package: generated chunks, or a picture copied from the media store."""

    path: str
    chunks: Iterable[bytes] | None = None
    source: Path | None = None


def package_entries(
    session: Session, media_dir: Path, since: datetime | None = None, until: datetime | None = None
) -> Iterator[Entry]:
    """The package's files in order; each is generated only when the consumer reaches it."""
    yield Entry("datapackage.json", [json.dumps(descriptor(session, since, until), indent=1).encode()])
    yield Entry("deployments.csv", csv_chunks("deployments", deployment_rows(session, since, until)))
    yield Entry("media.csv", csv_chunks("media", media_rows(session, media_dir, since, until)))
    yield Entry("observations.csv", csv_chunks("observations", observation_rows(session, since, until)))
    for path, source in media_files(session, media_dir, since, until):
        yield Entry(path, source=source)


def stream_zip(entries: Iterable[Entry], out: IO[bytes]) -> None:
    """Write the entries as a ZIP into `out` (a file, a pipe, a response stream: no seeking needed).
    Pictures are stored as they are (JPEG already), tables deflated."""
    for chunk in zip_chunks(entries):
        out.write(chunk)


# --- a whole package in memory: for small exports and tests ---------------------------------


@dataclass
class CamtrapPackage:
    files: dict[str, bytes]  # path in the package -> content
    media_files: dict[str, Path]  # pictures to include: path in the package -> file on disk
    skipped_frames: int  # frames outside every deployment


def build_package(
    session: Session, media_dir: Path, since: datetime | None = None, until: datetime | None = None
) -> CamtrapPackage:
    files: dict[str, bytes] = {}
    pictures: dict[str, Path] = {}
    for entry in package_entries(session, media_dir, since, until):
        if entry.source is not None:
            pictures[entry.path] = entry.source
        else:
            files[entry.path] = b"".join(entry.chunks or ())
    return CamtrapPackage(files, pictures, skipped_frames(session, since, until))


def write_zip(package: CamtrapPackage) -> bytes:
    buffer = io.BytesIO()
    entries = [Entry(p, chunks=[c]) for p, c in package.files.items()]
    entries += [Entry(p, source=s) for p, s in package.media_files.items()]
    stream_zip(entries, buffer)
    return buffer.getvalue()


# --- validation against the official profile and table schemas -------------------------------


def _local_profile(folder: Path) -> Path:
    """The official profile, its two remote `$ref`s pointed at local files.

    The profile builds on the generic Frictionless Data Package profile and on a GeoJSON schema,
    both referenced online. Offline, the generic layer is checked with frictionless's own Data
    Package profile (what frictionless applies to every package) and GeoJSON with the schema
    frictionless ships; the Camtrap DP part of the profile is the official file, unchanged.
    """
    import frictionless

    assets = Path(frictionless.__file__).parent / "assets" / "profiles"
    generic = folder / "data-package.json"
    generic.write_text(json.dumps({"$schema": "http://json-schema.org/draft-07/schema#",
                                   **frictionless.Package.metadata_profile}))  # fmt: skip
    text = (SCHEMA_DIR / PROFILE).read_text()
    text = text.replace("https://specs.frictionlessdata.io/schemas/data-package.json", generic.as_uri())
    text = text.replace("http://json.schemastore.org/geojson.json", (assets / "geojson.json").as_uri())
    profile = folder / PROFILE
    profile.write_text(text)
    return profile


def validate_folder(folder: Path) -> list[str]:
    """Errors of the package in `folder` against Camtrap DP 1.0.2 (empty: valid).

    The descriptor's official URLs are mapped to the schema files shipped in the package, so
    validation needs no network; frictionless checks the descriptor against the profile and every
    row of the three tables against their schemas (types, enums, ranges, keys, foreign keys)."""
    import frictionless
    from frictionless import system

    descriptor_path = folder / "datapackage.json"
    try:
        package = json.loads(descriptor_path.read_text())
    except (OSError, ValueError) as exc:
        return [f"datapackage.json: {exc}"]
    errors: list[str] = []
    if package.get("profile") != f"{BASE_URL}/{PROFILE}":
        errors.append(f"datapackage.json: profile is not Camtrap DP {VERSION}'s URL")
    with tempfile.TemporaryDirectory(prefix="camtrap-dp-") as tmp:
        schemas = Path(tmp) / f"camtrap-dp-{VERSION}"  # the version must be in the schema's path
        schemas.mkdir()
        local = json.loads(json.dumps(package))
        local["profile"] = str(_local_profile(schemas))
        for resource in local.get("resources", []):
            if isinstance(resource, dict) and isinstance(resource.get("schema"), str):
                name = resource["schema"].rsplit("/", 1)[-1]
                if resource["schema"] != f"{BASE_URL}/{name}" or not (SCHEMA_DIR / name).is_file():
                    errors.append(f"{resource.get('name')}: schema {resource['schema']!r} is not official")
                    continue
                shutil.copyfile(SCHEMA_DIR / name, schemas / name)
                resource["schema"] = str(schemas / name)
        # the descriptor and the schemas are ours (written above), so local paths may be read
        with system.use_context(trusted=True):
            report = frictionless.validate(local, basepath=str(folder))
        errors += [f"datapackage.json: {error.message}" for error in report.errors]
        for task in report.tasks:
            errors += [f"{task.name}: {error.message}" for error in task.errors]
    return errors


def validate_package(files: Mapping[str, bytes]) -> list[str]:
    """`validate_folder` for a package held in memory (datapackage.json and the three tables)."""
    with tempfile.TemporaryDirectory(prefix="camtrap-dp-") as tmp:
        for name in ("datapackage.json", *(f"{t}.csv" for t in TABLES)):
            if name in files:
                (Path(tmp) / name).write_bytes(files[name])
        return validate_folder(Path(tmp))
