"""Reviewing a cluster in a real headless Chromium: exclude a crop, label the rest by keyboard,
correct one crop; labels land with who and when, a "not an animal" queues the camera's memory."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.server.clustering.conftest import Fleet
from tests.server.conftest import ADMIN
from tests.server.test_dashboard import CHROMIUM, LAUNCH_ARGS
from tests.support.live_server import serving
from trapline.server.api.main import create_app
from trapline.server.db import transaction
from trapline.server.learning.labels import current_labels
from trapline.server.models import (
    ApiToken,
    ClusteringRun,
    ClusterMember,
    CropLabel,
    Detection,
    DetectionFrame,
    Job,
)
from trapline.server.security import hash_token

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")


def seed_run(fleet: Fleet) -> list[int]:
    """A run whose cluster 0 holds the jaguar trap's boxes, cluster 1 the others."""
    now = datetime.now(UTC)
    with transaction(fleet.sessions) as session:
        session.add(ApiToken(name="ada", token_hash=hash_token(ADMIN), role="admin", created_at=now))
        rows = session.execute(select(Detection.id, DetectionFrame.device_id).join(DetectionFrame)).all()
        session.add(ClusteringRun(id="run-1", created_at=now, extractor="yolo-backbone", mode="centre", state="done",
                                  crops=len(rows), k=2, path="", report={"space": "yolo-backbone-test", "unknown": 0,
                                  "clusters": [{"cluster": 0, "size": 1, "night_share": 0.0, "devices": {},
                                                "grid": "cluster-00.jpg"}]}))  # fmt: skip
        session.flush()
        jaguars = []
        for rank, (det_id, device) in enumerate(rows):
            cluster = 0 if device == "trap-jaguar" else 1
            jaguars += [det_id] if cluster == 0 else []
            session.add(ClusterMember(run_id="run-1", detection_id=det_id, cluster=cluster, nearest_cluster=cluster,
                                      probability=0.9, distance=float(rank), rank=rank, source_kind="frame",
                                      suggestion="jaguar", suggestion_probability=0.8))  # fmt: skip
    return jaguars


@pytest.fixture
def page(fleet: Fleet) -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    app = create_app(fleet.settings)
    with serving(app) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        yield browser.new_context(base_url=url).new_page()
        browser.close()


def test_label_a_cluster_by_keyboard_and_correct_a_crop(fleet: Fleet, page, tmp_path: Path) -> None:
    jaguars = seed_run(fleet)
    page.goto("/login")
    page.fill("#token", ADMIN)
    page.click("button[type=submit]")
    page.wait_for_url(lambda url: url.endswith("/"))
    page.goto("/review")
    assert page.query_selector("#runs tr[data-run='run-1']") is not None
    page.goto("/review/run-1/0")
    page.wait_for_function(f"document.querySelectorAll('#crops .crop').length == {len(jaguars)}")
    page.wait_for_function(
        "[...document.querySelectorAll('#crops img')].every(i => i.complete && i.naturalWidth == 224)"
    )
    page.keyboard.press("ArrowRight")
    page.keyboard.press("x")  # exclude the second crop from the cluster's label
    assert page.get_attribute("#crops .crop:nth-child(2)", "class") == "crop excluded focus"
    page.keyboard.press("l")
    page.keyboard.type("Jaguar")
    page.keyboard.press("Enter")
    page.wait_for_selector(f"#status:has-text('{len(jaguars) - 1} crop(s) labelled \"jaguar\"')")
    with fleet.sessions() as session:
        labels = current_labels(session)
    assert {k for k, v in labels.items() if v.label == "jaguar"} == {f"d{d}" for d in jaguars} - {
        f"d{jaguars[1]}"
    }
    assert {v.labelled_by for v in labels.values()} == {"ada"}
    page.screenshot(path=str(tmp_path / "review.png"), full_page=True)

    page.keyboard.press("ArrowLeft")
    page.keyboard.press("s")  # select the first crop alone, then correct it
    page.keyboard.press("n")
    page.wait_for_selector("#status:has-text('1 crop(s) labelled \"not an animal\"')")
    page.wait_for_selector("#crops .crop:first-child .label:has-text('not an animal (ada)')")
    with fleet.sessions() as session:
        first = current_labels(session, [f"d{jaguars[0]}"])[f"d{jaguars[0]}"]
        history = list(session.scalars(select(CropLabel).where(CropLabel.detection_id == jaguars[0])))
        queued = list(session.scalars(select(Job).where(Job.kind == "ignore_regions")))
    assert first.label == "not an animal" and [h.label for h in history] == ["jaguar", "not an animal"]
    assert [j.params for j in queued] == [{"device_id": "trap-jaguar"}]
