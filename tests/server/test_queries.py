"""Shared read queries scale to a year of frames."""

from __future__ import annotations

from typing import Any

from trapline.server.queries import boxes_by_frame, media_by_frame


def test_lookups_for_more_frames_than_a_statement_may_bind(database_url: str, sessions_for: Any) -> None:
    ids = [f"trap-01:{n:09d}" for n in range(70_000)]  # above SQLite's 32,766 and PostgreSQL's 65,535
    with sessions_for(database_url)() as session:
        boxes = boxes_by_frame(session, ids)
        media = media_by_frame(session, ids)
    assert len(boxes) == len(media) == 70_000
    assert not any(boxes.values())
