"""The dashboard in a real headless Chromium (Debian's), driven by Playwright, over data stored
through the real ingest path. One server and one browser for the whole module; every page is
photographed into artifacts/screenshots/ (kept by CI, looked at by people)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import ROOT, SAMPLES
from tests.server.conftest import ADMIN, UPLOAD, accepted, seed, settings_for
from tests.support.live_server import serving
from trapline.bundle import sign_bundle
from trapline.edge.config import PACKAGED_KEYRING, PACKAGED_MODEL
from trapline.keyring import generate_keys
from trapline.manifest import ModelManifest
from trapline.server.api.main import create_app
from trapline.server.db import transaction
from trapline.server.ingest.store import store_batch
from trapline.server.migrate import upgrade
from trapline.server.model_registry import register_bundle
from trapline.server.models import HeartbeatSample

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")
LAUNCH_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
SCREENSHOTS = ROOT / "artifacts" / "screenshots"
# the seed's trap-01 frames are 03:00 UTC + n hours from this day; these extras are at night
NIGHT = datetime(2026, 11, 23, 22, 0, tzinfo=UTC)
PHOTOS = ["cougar-39858-0.jpg", "squirrel-frame105534.jpg", "buow-RCNX0242.jpg", "coyote-51472-0.jpg"]


def _night_frames() -> list[Any]:
    """trap-02, three night frames with two animals each (the diel plot's night bars)."""
    messages = []
    for n in range(3):
        at = NIGHT + timedelta(minutes=20 * n)
        body = {
            "schema": "trapline.detections/1", "id": f"trap-02:night{n}", "device_id": "trap-02",
            "captured_at": at.isoformat(), "processed_at": at.isoformat(), "sequence_id": "trap-02:seq:night",
            "frame_index": n, "image": {"file": f"IMG_9{n}.JPG", "sha256": "c" * 64, "width": 1920, "height": 1080, "night": True},
            "model": {"name": "trapline-nano", "version": "2", "sha256": "b" * 64}, "inference_ms": 15.0,
            "detections": [{"category": "animal", "conf": 0.93, "bbox": [0.42, 0.45, 0.2, 0.3]},
                           {"category": "animal", "conf": 0.61, "bbox": [0.1, 0.5, 0.15, 0.2]}],
        }  # fmt: skip
        messages.append(accepted("trapline/trap-02/detections", json.dumps(body).encode()))
    return messages


def _model_v2(tmp: Path) -> tuple[Path, Path]:
    """The shipped bundle re-signed (by a test key) as v2 with precision-recall curves."""
    key, public = tmp / "keys" / "test.key", tmp / "keys" / "test.pub"
    generate_keys(key, public)
    bundle = tmp / "v2"
    shutil.copytree(PACKAGED_MODEL, bundle)
    manifest = ModelManifest.read(bundle / "manifest.json")
    metrics = json.loads(json.dumps(manifest.metrics))
    metrics["test_split"] |= {"recall": 0.8, "pr_curves": {"animal": [1.0] * 60 + [0.8] * 20 + [0.4] * 21}}
    sign_bundle(bundle, manifest.model_copy(update={"version": "2", "metrics": metrics}), key)
    return bundle, public


def _enrich(app: Any, client: TestClient, tmp: Path) -> None:
    headers = {"Authorization": f"Bearer {ADMIN}"}
    for device, lat, lon in (("trap-01", 37.02, -6.43), ("trap-02", 36.98, -6.38)):
        body = {"device_id": device, "location_name": f"Doñana {device}", "latitude": lat, "longitude": lon,
                "start": "2026-11-01T00:00:00+00:00"}  # fmt: skip
        assert client.post("/api/v1/deployments", json=body, headers=headers).status_code == 201
    for n, name in enumerate(PHOTOS):  # pictures for the newest frames of trap-01
        frame = f"trap-01:{(29 - n) * 3600:09d}"
        response = client.post("/api/v1/media", data={"kind": "thumbnail", "detection_id": frame},
                               files={"file": (name, (SAMPLES / name).read_bytes())},
                               headers={"Authorization": f"Bearer {UPLOAD}"})  # fmt: skip
        assert response.status_code == 200, response.text
    assert client.post("/api/v1/labels", json={"species": "Lynx pardinus", "frame_id": "trap-01:000007200"},
                       headers=headers).status_code == 201  # fmt: skip
    now = datetime.now(UTC)
    with transaction(app.state.sessions) as session:
        beats = [accepted(f"trapline/{device}/heartbeat", json.dumps({
            "schema": "trapline.heartbeat/1", "ts": now.isoformat(), "uptime_s": 86400.0, "frames_processed": 1200,
            "frames_quarantined": 0, "spool_depth": depth, "spool_bytes": depth * 900, "dropped": dropped,
            "disk_free_bytes": disk, "cpu_temp_c": temp, "last_error": error}).encode())
            for device, depth, dropped, disk, temp, error in (
                ("trap-01", 3, 0, 20_000_000_000, 51.5, None),
                ("trap-02", 38, 30, 4_100_000_000, 63.0, "upload: connection refused"))]  # fmt: skip
        store_batch(session, [*_night_frames(), *beats], [])
        for hours in range(48, 0, -2):  # two days of kept heartbeats; trap-02's disk fills up
            for device, disk in (("trap-01", 20e9), ("trap-02", 9e9 - hours * 1e8)):
                session.add(HeartbeatSample(
                    device_id=device, received_at=now - timedelta(hours=hours),
                    spool_depth=(hours * 7) % 40 if device == "trap-02" else (hours * 3) % 12,
                    dropped=0 if device == "trap-01" else max(0, 30 - hours), frames_processed=1000 - hours,
                    disk_free_bytes=int(disk), cpu_temp_c=48 + (hours % 12), model_version="1"))  # fmt: skip
        register_bundle(session, PACKAGED_MODEL, PACKAGED_KEYRING)
    with transaction(app.state.sessions) as session:  # registered later: the newer release
        register_bundle(session, *_model_v2(tmp))


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("dashboard")
    url = f"sqlite:///{tmp / 'trapline.sqlite'}"
    upgrade(url)
    app = create_app(settings_for(url, tmp))
    seed(app)
    with TestClient(app, base_url="https://testserver") as client:  # traps upload over https
        _enrich(app, client, tmp)
    with serving(app) as url:
        yield url
    app.state.engine.dispose()


@pytest.fixture(scope="module")
def context(server_url: str) -> Iterator[Any]:
    """One browser for the module, logged in once (through the login page, wrong token first)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        context = browser.new_context(base_url=server_url, viewport={"width": 1360, "height": 900})
        page = context.new_page()
        page.goto("/")
        page.wait_for_url("**/login")
        page.fill("#token", "wrong")
        page.click("button[type=submit]")
        page.wait_for_selector("#login-error:not([hidden])")
        page.fill("#token", ADMIN)
        page.click("button[type=submit]")
        page.wait_for_url(lambda url: url.endswith("/"))
        page.close()
        yield context
        browser.close()


@pytest.fixture
def page(context: Any) -> Iterator[Any]:
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("requestfailed", lambda request: errors.append(f"request failed: {request.url}"))
    yield page
    page.close()
    assert errors == []  # no script error, and nothing was fetched from outside (no internet needed)


def _shoot(page: Any, name: str, full_page: bool = True) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=full_page)


def _ready(page: Any, path: str) -> None:
    page.goto(path)
    page.wait_for_selector("body[data-ready='1']", timeout=15000)


def test_overview_charts_map_and_fleet(page: Any) -> None:
    _ready(page, "/")
    # fleet: offline first, then online
    assert [r.get_attribute("data-device") for r in page.query_selector_all("#fleet tbody tr")] == [
        "trap-02",
        "trap-01",
    ]
    activity = page.locator("#activity-chart")
    assert activity.get_attribute("data-total") == str(
        30 + 6 + 5 + 6
    )  # boxes: animals, people, vehicles, night animals
    assert activity.locator("canvas").count() == 1
    assert page.get_attribute("#diel-chart", "data-total") == str(30 + 5 + 3)  # frames with a detection
    day, night = page.evaluate(
        "(() => { const o = echarts.getInstanceByDom(document.getElementById('diel-chart')).getOption();"
        " return [o.series[0].data, o.series[1].data]; })()"
    )
    # Doñana is at -6.4°: local solar time is UTC - 0 h (round(-6.4 / 15) = 0); the night frames are at 22 h
    assert night[22] == 3 and sum(night) == 3 and sum(day) == 35
    assert page.get_attribute("#trapdays-chart", "data-cells") == "4"  # trap-01 on 2 days, trap-02 on 2 days
    assert (
        page.get_attribute("#map", "data-mode") == "plot" and page.get_attribute("#map", "data-points") == "2"
    )
    assert "coordinates only" in page.inner_text("#map-note")
    assert page.inner_text("#kpis").count("1 / 2") == 1
    _shoot(page, "overview")
    page.click("[data-by=species]")
    page.wait_for_function("document.getElementById('activity-chart').dataset.total === '1'")
    page.click("#range [data-days='7']")  # the seed lies in 2026-11: outside the last 7 days
    page.wait_for_function("document.getElementById('diel-chart').dataset.total === '0'")
    assert "since=" in page.url


def test_fleet_health_history(page: Any) -> None:
    _ready(page, "/fleet")
    assert page.query_selector("#fleet tbody tr").get_attribute("data-health") == "offline"
    assert "1 of 2 traps need a look" in page.inner_text("#fleet-note")
    for metric in ("spool_depth", "dropped", "disk_free_bytes", "cpu_temp_c"):
        assert page.get_attribute(f"#h-{metric}", "data-points") == str(2 * (24 + 1))  # kept + the last beat
    _shoot(page, "fleet")


def test_trap_page(page: Any) -> None:
    _ready(page, "/traps/trap-01")
    assert "online" in page.inner_text("#trap-health")
    assert len(page.query_selector_all("#latest .shot")) == 8
    _shoot(page, "trap")


def test_detections_browser_filters_pages_and_keyboard(page: Any) -> None:
    _ready(page, "/detections")
    assert len(page.query_selector_all("#latest .shot")) == 24
    assert page.inner_text("#page-info") == "1–24"
    page.click("#next")
    page.wait_for_function("document.getElementById('page-info').textContent.startsWith('25–')")
    assert len(page.query_selector_all("#latest .shot")) == 38 - 24
    page.click("#prev")
    page.wait_for_function("document.getElementById('page-info').textContent === '1–24'")
    # night only: the three infrared frames
    page.select_option("select[name=night]", "true")
    page.click("#filters button[type=submit]")
    page.wait_for_function("document.querySelectorAll('#latest .shot').length === 3")
    assert "night=true" in page.url
    page.select_option("select[name=night]", "")
    page.select_option("select[name=category]", "person")
    page.click("#filters button[type=submit]")
    page.wait_for_function("document.querySelectorAll('#latest .shot').length === 6")
    page.select_option("select[name=category]", "")
    page.fill("input[name=from]", "2026-11-23")
    page.click("#filters button[type=submit]")
    # trap-01's frames from 00:00 on the 23rd (n = 21..29) and the three night frames
    page.wait_for_function("document.querySelectorAll('#latest .shot').length === 12")
    page.fill("input[name=from]", "")
    page.select_option("select[name=device_id]", "trap-01")
    page.click("#filters button[type=submit]")
    page.wait_for_function("document.getElementById('page-info').textContent === '1–24'")
    _shoot(page, "detections")
    # keyboard: the newest picture is selected; Enter opens it full size, → moves, Esc closes
    page.locator("#latest").focus()
    page.keyboard.press("Enter")
    viewer = page.locator("#viewer")
    viewer.wait_for(state="visible")
    assert viewer.get_attribute("data-frame") == "trap-01:000104400"
    picture = page.locator("#viewer-picture img")
    picture.wait_for()
    page.wait_for_function("document.querySelector('#viewer-picture img').complete")
    assert page.locator("#viewer-picture .box").count() == 1
    assert "Lynx" not in page.inner_text("#viewer-facts")
    _shoot(page, "detections-viewer", full_page=False)
    page.keyboard.press("ArrowRight")
    page.wait_for_function("document.getElementById('viewer').dataset.frame === 'trap-01:000100800'")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    page.wait_for_function("document.getElementById('viewer').dataset.frame === 'trap-01:000090000'")
    assert page.locator("#viewer-picture .box").count() == 2  # every 5th frame also has a person
    page.keyboard.press("Escape")
    viewer.wait_for(state="hidden")
    page.keyboard.press("ArrowRight")
    assert page.locator("#latest .shot.selected").get_attribute("data-frame") == "trap-01:000086400"


def test_models_page_compares_with_the_release_before(page: Any) -> None:
    _ready(page, "/models")
    cards = page.query_selector_all(".model")
    assert [c.query_selector("h2").inner_text() for c in cards] == ["trapline-nano v2", "trapline-nano v1"]
    newest, oldest = cards
    recall = newest.query_selector("tr[data-metric=recall]").inner_text().split("\t")
    assert recall[1:] == ["0.800", "0.636", "+0.164"]
    assert "release before it" in newest.query_selector(".compare-note").inner_text()
    assert newest.query_selector(".pr").get_attribute("data-curves") == "1"
    assert newest.query_selector(".confusion").get_attribute("data-cells") == "16"  # 3 classes + background
    assert newest.query_selector(".threshold").get_attribute("data-points") == "20"
    # v1 has nothing older: it stands beside the baseline of its own evaluation report
    assert "baseline" in oldest.query_selector(".compare-note").inner_text()
    assert oldest.query_selector(".pr").get_attribute("data-curves") == "0"  # its bundle predates PR curves
    _shoot(page, "models")


def test_login_page_screenshot(server_url: str, context: Any) -> None:
    page = context.browser.new_context(
        base_url=server_url, viewport={"width": 1360, "height": 700}
    ).new_page()
    page.goto("/login")
    page.wait_for_selector("#login-form")
    _shoot(page, "login")
    page.context.close()
