"""The Pi installs only the edge extra: the agent must not need torch, ultralytics or the server."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "torchvision", "ultralytics", "fastapi", "sqlalchemy")
OTHER_PARTS = ("trapline.server", "trapline.training", "trapline.export", "trapline.cli")


def test_agent_modules_import_without_heavy_packages() -> None:
    modules = sorted(
        ".".join(("trapline", *p.relative_to(ROOT).with_suffix("").parts))
        for p in (ROOT / "edge").rglob("*.py")
        if p.name != "__init__.py"
    )
    probe = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in modules)
        + f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}"
        + f" or m.startswith({OTHER_PARTS!r})))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert len(modules) > 15
    assert result.stdout.strip() == "[]"


def test_edge_extra_pulls_no_heavy_packages() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + project["optional-dependencies"]["edge"]
    names = {req.split(";")[0].split(">")[0].split("=")[0].split("<")[0].strip().lower() for req in wanted}
    assert names.isdisjoint({"torch", "torchvision", "ultralytics", "fastapi", "sqlalchemy"})
    assert {"onnxruntime", "paho-mqtt", "opencv-python-headless"} <= names


def test_the_installed_package_carries_its_runtime_data(tmp_path: Path) -> None:
    """A Pi installs the wheel, not the checkout: the default model must be inside it."""
    import shutil
    import zipfile

    import pytest

    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("uv is not installed (make installs it)")
    # a clean copy: setuptools reuses a stale build/ folder of the checkout, which would hide omissions
    source = tmp_path / "src"
    skip = shutil.ignore_patterns(
        ".git", ".venv", ".cache", "build", "var", "*.egg-info", "__pycache__", ".*_cache"
    )
    shutil.copytree(ROOT, source, ignore=skip)
    out = tmp_path / "dist"
    subprocess.run(
        [uv, "build", "--quiet", "--wheel", "--out-dir", str(out), str(source)], check=True, timeout=300
    )
    names = set(zipfile.ZipFile(next(out.glob("*.whl"))).namelist())
    bundle = {
        f"trapline/edge/models/trapline-nano/{p.name}"
        for p in (ROOT / "edge" / "models" / "trapline-nano").iterdir()
    }
    required = bundle | {
        "trapline/contracts.py",
        "trapline/edge/models/keyring/" + next((ROOT / "edge" / "models" / "keyring").glob("*.pub")).name,
        "trapline/edge/agent.example.yaml",
        "trapline/edge/backends/onnxruntime.py",
        "trapline/cli/main.py",
        "trapline/training/fit.py",
        "trapline/export/bundle.py",
        "trapline/server/web/templates/fleet.html",
        "trapline/server/web/static/app.js",
        "trapline/server/migrations/env.py",
        "trapline/server/migrations/versions/0001_initial_schema.py",
    }
    assert required - names == set()
    # one namespace: no generic top-level packages, nothing of the benchmarks or the tests
    top_level = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top_level == {"trapline"}
    assert not [name for name in names if "postgres" in name or "/bench/" in name or "/tests/" in name]
