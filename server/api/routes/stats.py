"""What the dashboard's charts read: activity, diel rhythm, trap-days, fleet health, the map."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query

from trapline.server import stats
from trapline.server.api.deps import SessionDep, SettingsDep, UserDep
from trapline.server.api.routes.devices import fleet

router = APIRouter(prefix="/stats", tags=["stats"])

# worst first: the traps someone has to look at
HEALTH_ORDER = {"offline": 0, "stale": 1, "stopped": 2, "unknown": 3, "online": 4}
Since = Annotated[datetime | None, Query(description="from this instant (ISO 8601 with offset)")]
Until = Annotated[datetime | None, Query(description="before this instant")]


@router.get("/activity")
def activity(
    session: SessionDep,
    _user: UserDep,
    since: Since = None,
    until: Until = None,
    device_id: str | None = None,
    by: Literal["category", "species"] = "category",
) -> list[dict[str, Any]]:
    """Per UTC day: detections per category (boxes), or labelled frames per species."""
    window = stats.Window(since, until, device_id)
    if by == "species":
        return stats.activity_by_species(session, window)
    return stats.activity_by_category(session, window)


@router.get("/diel")
def diel(
    session: SessionDep,
    _user: UserDep,
    since: Since = None,
    until: Until = None,
    device_id: str | None = None,
    category: str | None = None,
) -> dict[str, Any]:
    """Frames with a detection per hour of day (local solar time), day and night frames apart."""
    return stats.diel_activity(session, stats.Window(since, until, device_id), category)


@router.get("/trap-days")
def trap_days(
    session: SessionDep, _user: UserDep, since: Since = None, until: Until = None
) -> list[dict[str, Any]]:
    """Frames per trap per UTC day; a day without a row is a day the trap sent nothing."""
    return stats.trap_days(session, stats.Window(since, until))


@router.get("/fleet")
def fleet_health(
    session: SessionDep, settings: SettingsDep, _user: UserDep, since: Since = None
) -> dict[str, Any]:
    """Every trap's health, offline and stale first, with its heartbeat history and location."""
    devices = sorted(
        fleet(session, settings.stale_after_s), key=lambda d: (HEALTH_ORDER.get(d.health, 9), d.id)
    )
    where = stats.current_deployments(session)
    return {
        "now": datetime.now(UTC).isoformat(),
        "stale_after_s": settings.stale_after_s,
        "devices": [
            {
                **d.model_dump(mode="json"),
                "latitude": where[d.id].latitude if d.id in where else None,
                "longitude": where[d.id].longitude if d.id in where else None,
                "location_name": where[d.id].location_name if d.id in where else None,
            }
            for d in devices
        ],
        "history": stats.heartbeat_history(session, None, since),
        "map": {"tile_url": settings.map_tile_url, "attribution": settings.map_tile_attribution},
    }
