"""Layers point one way: entry points > server > export > training > edge > the shared kernel.

Read from the source (every import statement, at any depth in a module), so a lazy import inside a
function counts as much as one at the top.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PARTS = ("edge", "server", "training", "export", "cli")
# part -> the parts it must never import
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "kernel": PARTS,
    "edge": ("server", "training", "export", "cli"),
    "training": ("server", "export", "cli"),
    "export": ("server", "cli"),
    "server": ("cli",),
    "cli": (),
}


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def _sources(part: str) -> list[Path]:
    if part == "kernel":
        return sorted((ROOT / "trapline").glob("*.py"))
    return sorted((ROOT / part).rglob("*.py"))


@pytest.mark.parametrize("part", list(FORBIDDEN))
def test_a_part_imports_nothing_above_it(part: str) -> None:
    sources = _sources(part)
    assert sources, part
    wrong = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in sources
        for name in _imports(path)
        if any(
            name == f"trapline.{above}" or name.startswith(f"trapline.{above}.") for above in FORBIDDEN[part]
        )
    ]
    assert wrong == []


def test_no_module_uses_the_old_top_level_names() -> None:
    """`edge.x` next to `trapline.edge.x` would load the same file twice, as two modules."""
    paths = [p for part in (*PARTS, "trapline", "tests", "bench") for p in (ROOT / part).rglob("*.py")]
    wrong = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in paths
        for name in _imports(path)
        if name.split(".")[0] in PARTS
    ]
    assert wrong == []


def test_server_services_do_not_depend_on_routes_or_pages() -> None:
    server = ROOT / "server"
    # commands.py is the server's entry point: it starts the API, so it may import it
    services = [
        p for p in server.rglob("*.py") if p.relative_to(server).parts[0] not in ("api", "web", "commands.py")
    ]
    wrong = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in services
        for name in _imports(path)
        if name.startswith(("trapline.server.api", "trapline.server.web"))
    ]
    assert wrong == []
