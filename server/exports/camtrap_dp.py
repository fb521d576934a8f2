"""Camtrap DP 1.0 export (deployments, media, observations + datapackage.json), validated.

The official profile and table schemas live online (tdwg/camtrap-dp) and cannot be fetched here,
so the table schemas below are transcribed from Camtrap DP 1.0: every field, in order, with type,
required flag and enumerations. The package points at the official schema URLs; validation runs
frictionless against these transcriptions.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from trapline.server.models import Deployment, DetectionFrame, Device, Sequence
from trapline.server.queries import boxes_by_frame, frames_in, media_by_frame, picture, rows_where_in

VERSION = "1.0"
BASE = f"https://raw.githubusercontent.com/tdwg/camtrap-dp/{VERSION}"
OBSERVATION_TYPE = {"animal": "animal", "person": "human", "vehicle": "vehicle"}


def _f(
    name: str, kind: str = "string", required: bool = False, enum: list[str] | None = None
) -> dict[str, Any]:
    field: dict[str, Any] = {"name": name, "type": kind}
    constraints: dict[str, Any] = {}
    if required:
        constraints["required"] = True
    if enum:
        constraints["enum"] = enum
    if constraints:
        field["constraints"] = constraints
    return field


SCHEMAS: dict[str, dict[str, Any]] = {
    "deployments": {
        "fields": [
            _f("deploymentID", required=True),
            _f("locationID"),
            _f("locationName"),
            _f("latitude", "number", True),
            _f("longitude", "number", True),
            _f("coordinateUncertainty", "integer"),
            _f("deploymentStart", "datetime", True),
            _f("deploymentEnd", "datetime", True),
            _f("setupBy"),
            _f("cameraID"),
            _f("cameraModel"),
            _f("cameraDelay", "integer"),
            _f("cameraHeight", "number"),
            _f("cameraDepth", "number"),
            _f("cameraTilt", "integer"),
            _f("cameraHeading", "integer"),
            _f("detectionDistance", "number"),
            _f("timestampIssues", "boolean"),
            _f("baitUse", "boolean"),
            _f("featureType"),
            _f("habitat"),
            _f("deploymentGroups"),
            _f("deploymentTags"),
            _f("deploymentComments"),
        ],
        "primaryKey": ["deploymentID"],
    },
    "media": {
        "fields": [
            _f("mediaID", required=True),
            _f("deploymentID", required=True),
            _f("captureMethod", enum=["activityDetection", "timeLapse"]),
            _f("timestamp", "datetime", True),
            _f("filePath", required=True),
            _f("filePublic", "boolean", True),
            _f("fileName"),
            _f("fileMediatype", required=True),
            _f("exifData", "object"),
            _f("favorite", "boolean"),
            _f("mediaComments"),
        ],
        "primaryKey": ["mediaID"],
    },
    "observations": {
        "fields": [
            _f("observationID", required=True),
            _f("deploymentID", required=True),
            _f("mediaID"),
            _f("eventID"),
            _f("eventStart", "datetime", True),
            _f("eventEnd", "datetime", True),
            _f("observationLevel", required=True, enum=["media", "event"]),
            _f(
                "observationType",
                required=True,
                enum=["animal", "human", "vehicle", "blank", "unknown", "unclassified"],
            ),
            _f("cameraSetupType", enum=["setup", "calibration"]),
            _f("scientificName"),
            _f("count", "integer"),
            _f("lifeStage", enum=["adult", "subadult", "juvenile"]),
            _f("sex", enum=["female", "male"]),
            _f("behavior"),
            _f("individualID"),
            _f("individualPositionRadius", "number"),
            _f("individualPositionAngle", "number"),
            _f("individualSpeed", "number"),
            _f("bboxX", "number"),
            _f("bboxY", "number"),
            _f("bboxWidth", "number"),
            _f("bboxHeight", "number"),
            _f("classificationMethod", enum=["human", "machine"]),
            _f("classifiedBy"),
            _f("classificationTimestamp", "datetime"),
            _f("classificationProbability", "number"),
            _f("observationTags"),
            _f("observationComments"),
        ],
        "primaryKey": ["observationID"],
    },
}


def _ts(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _csv(name: str, rows: Iterable[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, [f["name"] for f in SCHEMAS[name]["fields"]], lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return buffer.getvalue()


@dataclass
class CamtrapPackage:
    files: dict[str, bytes]  # path in the package -> content
    media_files: dict[str, Path]  # pictures to include: path in the package -> file on disk
    skipped_frames: int  # frames outside every deployment


def build_package(
    session: Session, media_dir: Path, since: datetime | None = None, until: datetime | None = None
) -> CamtrapPackage:
    deployments = list(session.scalars(select(Deployment).order_by(Deployment.device_id, Deployment.start)))
    now = datetime.now(UTC)
    dep_rows: list[dict[str, Any]] = []
    media_rows: list[dict[str, Any]] = []
    obs_rows: list[dict[str, Any]] = []
    media_files: dict[str, Path] = {}
    skipped = 0
    models = {
        d.id: f"{d.model_name or 'unknown'} v{d.model_version or '?'}"
        for d in session.scalars(select(Device))
    }
    all_frames: list[DetectionFrame] = list(session.scalars(frames_in(since, until)))
    frame_ids = [f.id for f in all_frames]
    boxes = boxes_by_frame(session, frame_ids)
    media = media_by_frame(session, frame_ids)
    sequence_ids = sorted({f.sequence_id for f in all_frames})
    sequences = {s.id: s for s in rows_where_in(session, select(Sequence), Sequence.id, sequence_ids)}
    used: set[int] = set()
    for frame in all_frames:
        dep = next(
            (
                d
                for d in deployments
                if d.device_id == frame.device_id
                and d.start <= frame.captured_at
                and (d.end is None or frame.captured_at < d.end)
            ),
            None,
        )
        if dep is None or dep.latitude is None or dep.longitude is None:
            skipped += 1
            continue
        used.add(dep.id)
        dep_id = f"{dep.device_id}-{dep.id}"
        best = picture(media[frame.id])
        if best is not None and (media_dir / best.sha256[:2] / best.sha256).exists():
            path = f"media/{best.sha256}.jpg"
            media_files[path] = media_dir / best.sha256[:2] / best.sha256
        else:
            path = frame.image_file  # on the trap's card, not part of the package
        media_rows.append(
            {
                "mediaID": frame.id,
                "deploymentID": dep_id,
                "captureMethod": "activityDetection",
                "timestamp": _ts(frame.captured_at),
                "filePath": path,
                "filePublic": "false",
                "fileName": Path(frame.image_file).name,
                "fileMediatype": "image/jpeg",
            }
        )
        seq = sequences.get(frame.sequence_id)
        start, end = (
            (seq.first_frame_at, seq.last_frame_at) if seq else (frame.captured_at, frame.captured_at)
        )
        classified = {
            "classificationMethod": "machine",
            "classifiedBy": models.get(frame.device_id),
            "classificationTimestamp": _ts(frame.processed_at),
        }
        base = {
            "deploymentID": dep_id,
            "mediaID": frame.id,
            "eventID": frame.sequence_id,
            "eventStart": _ts(start),
            "eventEnd": _ts(end),
            "observationLevel": "media",
        }
        frame_boxes = boxes.get(frame.id, [])
        if not frame_boxes:
            obs_rows.append(
                {"observationID": f"{frame.id}:blank", **base, "observationType": "blank", **classified}
            )
        for index, det in enumerate(frame_boxes):
            obs_rows.append(
                {
                    "observationID": f"{frame.id}:{index}",
                    **base,
                    "observationType": OBSERVATION_TYPE.get(det.category, "unknown"),
                    "count": 1,
                    "bboxX": round(det.x, 4),
                    "bboxY": round(det.y, 4),
                    "bboxWidth": round(det.w, 4),
                    "bboxHeight": round(det.h, 4),
                    **classified,
                    "classificationProbability": round(det.conf, 4),
                }
            )
    for dep in deployments:
        if dep.id not in used:
            continue
        dep_rows.append(
            {
                "deploymentID": f"{dep.device_id}-{dep.id}",
                "locationID": dep.location_name,
                "locationName": dep.location_name,
                "latitude": dep.latitude,
                "longitude": dep.longitude,
                "deploymentStart": _ts(dep.start),
                "deploymentEnd": _ts(dep.end or now),
                "cameraID": dep.device_id,
            }
        )
    times = [f.captured_at for f in all_frames]
    descriptor = {
        "profile": f"{BASE}/camtrap-dp-profile.json",
        "name": "trapline-export",
        "created": _ts(now),
        "contributors": [{"title": "Trapline fleet", "role": "publisher"}],
        "project": {
            "title": "Trapline camera-trap fleet",
            "samplingDesign": "opportunistic",
            "captureMethod": ["activityDetection"],
            "individualAnimals": False,
            "observationLevel": ["media"],
        },
        "spatial": {"type": "Point", "coordinates": [dep_rows[0]["longitude"], dep_rows[0]["latitude"]]}
        if dep_rows
        else None,
        "temporal": {"start": _ts(min(times)).split("T")[0], "end": _ts(max(times)).split("T")[0]}
        if times
        else None,
        "taxonomic": [],
        "resources": [
            {
                "name": name,
                "path": f"{name}.csv",
                "profile": "tabular-data-resource",
                "format": "csv",
                "mediatype": "text/csv",
                "encoding": "utf-8",
                "schema": f"{BASE}/{name}-table-schema.json",
            }
            for name in ("deployments", "media", "observations")
        ],
    }
    files = {
        "datapackage.json": json.dumps(descriptor, indent=1).encode(),
        "deployments.csv": _csv("deployments", dep_rows).encode(),
        "media.csv": _csv("media", media_rows).encode(),
        "observations.csv": _csv("observations", obs_rows).encode(),
    }
    return CamtrapPackage(files, media_files, skipped)


def validate_package(files: dict[str, bytes]) -> list[str]:
    """Errors of the three tables against the Camtrap DP 1.0 table schemas (empty: valid)."""
    from frictionless import Resource, Schema

    errors = []
    for name in ("deployments", "media", "observations"):
        resource = Resource(
            data=files[f"{name}.csv"], format="csv", schema=Schema.from_descriptor(SCHEMAS[name])
        )
        report = resource.validate()
        errors += [f"{name}: {e.message}" for task in report.tasks for e in task.errors]
    descriptor = json.loads(files["datapackage.json"])
    for key in ("profile", "resources", "created", "contributors", "project"):
        if not descriptor.get(key):
            errors.append(f"datapackage.json: missing {key}")
    return errors
