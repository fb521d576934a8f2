"""The dashboard in a real headless Chromium (Debian's), driven by Playwright; seeded data."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from tests.server.conftest import ADMIN, seed, settings_for
from trapline.cli.broker import free_port
from trapline.server.api.main import create_app

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")
LAUNCH_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


@pytest.fixture
def server_url(sqlite_url: str, tmp_path: Path) -> Iterator[str]:
    app = create_app(settings_for(sqlite_url, tmp_path))
    seed(app)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


@pytest.fixture
def page(server_url: str) -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        context = browser.new_context(base_url=server_url)
        yield context.new_page()
        browser.close()


def _login(page) -> None:
    page.goto("/")
    page.wait_for_url("**/login")
    page.fill("#token", "wrong")
    page.click("button[type=submit]")
    page.wait_for_selector("#login-error:not([hidden])")
    page.fill("#token", ADMIN)
    page.click("button[type=submit]")
    page.wait_for_url(lambda url: url.endswith("/"))


def test_fleet_page_shows_traps_counts_and_pictures(page, tmp_path: Path) -> None:
    _login(page)
    page.wait_for_selector("#fleet tbody tr")
    health = {row.get_attribute("data-device"): row.get_attribute("data-health")
              for row in page.query_selector_all("#fleet tbody tr")}  # fmt: skip
    assert health == {"trap-01": "online", "trap-02": "offline"}
    page.wait_for_selector("#latest .shot")
    assert len(page.query_selector_all("#latest .shot")) == 24  # first page
    page.click("#more")
    page.wait_for_function("document.querySelectorAll('#latest .shot').length == 35")
    assert len(page.query_selector_all("#latest .shot .box")) == 41  # 35 frames, 6 with a second box
    bars = page.query_selector_all("#timeline rect")
    assert sum(int(b.get_attribute("data-count")) for b in bars) == 41
    page.screenshot(path=str(tmp_path / "fleet.png"), full_page=True)


def test_filters_and_trap_page(page) -> None:
    _login(page)
    page.wait_for_selector("#latest .shot")
    page.select_option("select[name=category]", "person")
    page.click("#filters button[type=submit]")
    page.wait_for_function("document.querySelectorAll('#latest .shot').length == 6")
    labels = [s.inner_text() for s in page.query_selector_all("#latest .box span")]
    assert any(label.startswith("person") for label in labels)
    page.select_option("select[name=category]", "")
    page.select_option("select[name=device_id]", "trap-02")
    page.click("#filters button[type=submit]")
    page.wait_for_function("document.querySelectorAll('#latest .shot').length == 5")
    assert {c.inner_text().split(" · ")[0] for c in page.query_selector_all("#latest .caption")} == {
        "trap-02"
    }
    page.click("#fleet a:text('trap-01')")
    page.wait_for_url("**/traps/trap-01")
    page.wait_for_selector("#trap-health dd")
    assert "online" in page.inner_text("#trap-health")
    page.wait_for_function("document.querySelectorAll('#latest .shot').length == 24")
