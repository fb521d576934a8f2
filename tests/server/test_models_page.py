"""`trapline server model add` verifies a bundle and its metrics show in the API and the page."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from fastapi.testclient import TestClient

from tests.server.conftest import ADMIN, VIEWER, seed, settings_for
from trapline.edge.config import PACKAGED_MODEL
from trapline.server.api.main import create_app


def test_register_the_shipped_bundle_and_show_its_metrics(sqlite_url: str, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "TRAPLINE_SERVER_DATABASE_URL": sqlite_url,
        "TRAPLINE_SERVER_DATA_DIR": str(tmp_path),
    }
    tampered = tmp_path / "tampered"
    tampered.mkdir()
    for item in PACKAGED_MODEL.iterdir():
        (tampered / item.name).write_bytes(item.read_bytes())
    (tampered / "report.md").write_text("better than it is")
    refused = subprocess.run([sys.executable, "-m", "trapline.cli", "server", "model", "add", str(tampered)],
                             env=env, capture_output=True, text=True, check=False)  # fmt: skip
    assert refused.returncode != 0
    assert "does not match its sha256" in refused.stderr
    added = subprocess.run([sys.executable, "-m", "trapline.cli", "server", "model", "add", str(PACKAGED_MODEL)],
                           env=env, capture_output=True, text=True, check=True)  # fmt: skip
    assert "registered trapline-nano v1" in added.stdout
    app = create_app(settings_for(sqlite_url, tmp_path))
    seed(app)
    with TestClient(app, base_url="https://testserver") as client:
        models = client.get("/api/v1/models", headers={"Authorization": f"Bearer {VIEWER}"}).json()
        assert [(m["name"], m["version"]) for m in models] == [("trapline-nano", "1")]
        test_split = models[0]["metrics"]["test_split"]
        assert test_split["map50"] > 0
        # the charts' data, completed from the bundle's signed report.json
        assert test_split["classes"] == ["animal", "person", "vehicle"]
        assert len(test_split["confusion"]) == 4 and len(test_split["threshold_curve"]) == 20
        assert test_split["per_class"]["vehicle"]["ap50"] is None  # NaN in the report: null in JSON
        assert client.get("/api/v1/releases", headers={"Authorization": f"Bearer {VIEWER}"}).json() == []
        assert client.get("/models", follow_redirects=False).status_code == 303  # login first
        assert client.post("/api/v1/session", data={"token": ADMIN}).status_code == 200
        page = client.get("/models").text
    assert "trapline-nano" in page
    assert f'data-model-id="{models[0]["id"]}"' in page  # the page's charts are drawn from the API
