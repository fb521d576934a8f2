"""The `trapline` command loads only the part a command needs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from trapline.cli.main import COMMANDS

OTHER_PARTS = ("trapline.server", "trapline.training", "trapline.export", "torch", "ultralytics",
               "fastapi", "sqlalchemy")  # fmt: skip


def _loaded_after(argv: list[str]) -> tuple[int, list[str], str]:
    probe = (
        "import json, sys\n"
        "from trapline.cli.main import main\n"
        "try:\n"
        f"    code = main({argv!r})\n"
        "except SystemExit as exc:\n"
        "    code = exc.code\n"
        "print(json.dumps([code, sorted(sys.modules)]))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    code, modules = json.loads(result.stdout.strip().splitlines()[-1])
    return int(code or 0), modules, result.stdout


def test_edge_check_on_a_trap_loads_nothing_of_the_other_parts(tmp_path: Path) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "device_id": "trap-07",
                "source": {"type": "folder", "path": str(tmp_path / "dcim")},
                "spool": {"path": str(tmp_path / "spool.sqlite")},
                "quarantine_dir": str(tmp_path / "quarantine"),
            }
        )
    )
    code, modules, output = _loaded_after(["edge", "check", "--config", str(config)])
    assert code == 0, output
    assert "trapline.edge.detector" in modules  # it did run the model
    assert [m for m in modules if m.startswith(OTHER_PARTS)] == []


def test_help_lists_every_command_and_loads_none() -> None:
    code, modules, output = _loaded_after(["--help"])
    assert code == 0
    for name in COMMANDS:
        assert name in output
    assert [m for m in modules if m in {module for module, _ in COMMANDS.values()}] == []


def test_each_command_registers_its_subcommands() -> None:
    for name in COMMANDS:
        result = subprocess.run(
            [sys.executable, "-m", "trapline.cli", name, "--help"], capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr
        assert "usage: trapline" in result.stdout


def test_a_wrong_model_file_is_one_clear_line_not_a_traceback(tmp_path: Path) -> None:
    model = tmp_path / "model.bin"
    model.write_bytes(b"not a model")
    (tmp_path / "data.yaml").write_text(yaml.safe_dump({"path": str(tmp_path), "names": ["animal"]}))
    result = subprocess.run(
        [sys.executable, "-m", "trapline.cli.main", "train", "bursts", "--model", str(model),
         "--dataset", str(tmp_path / "data.yaml")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 2
    assert "unknown model format '.bin'" in result.stderr
    assert "Traceback" not in result.stderr
