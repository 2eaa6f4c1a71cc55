"""The layout rules of DESIGN.md hold: imports flow one way, and modules stay small."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from helpers import SRC

PACKAGE = SRC / "fleetbeat"
# package -> the fleetbeat packages it must never import (DESIGN.md, "Layout")
FORBIDDEN = {
    "config": {"agent", "sensors", "outputs", "collector", "registry"},
    "sensors": {"agent", "collector"},
    "outputs": {"agent", "collector", "sensors"},
}
MAX_LINES = 400
# Not split yet (issue 11 left none; a module that must wait for its split goes here).
TOO_LONG_FOR_NOW: set[str] = set()


def fleetbeat_imports(path: Path) -> set[str]:
    """The first component below `fleetbeat` of every module `path` imports."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "fleetbeat" and len(parts) > 1:
                found.add(parts[1])
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_flow_one_way(package):
    """config/ is a leaf; sensors/ and outputs/ import neither the agent nor the collector."""
    bad = []
    for path in sorted((PACKAGE / package).rglob("*.py")):
        wrong = fleetbeat_imports(path) & FORBIDDEN[package]
        if wrong:
            bad.append(f"{path.relative_to(PACKAGE)} imports {sorted(wrong)}")
    assert bad == []


def test_the_import_check_sees_lazy_and_type_only_imports(tmp_path):
    """Imports inside functions and under TYPE_CHECKING count too."""
    module = tmp_path / "m.py"
    module.write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import fleetbeat.agent.runtime\n"
        "def f():\n    from fleetbeat import collector\n"
    )
    assert fleetbeat_imports(module) == {"agent", "collector"}


def test_no_module_is_longer_than_400_lines():
    """Every module under src/fleetbeat fits in 400 lines (the dashboard's HTML aside)."""
    long = {
        str(path.relative_to(PACKAGE)): n
        for path in PACKAGE.rglob("*.py")
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert set(long) - TOO_LONG_FOR_NOW == set(), long
    assert set(long) >= TOO_LONG_FOR_NOW, "split already: remove it from TOO_LONG_FOR_NOW"
