"""Helpers for the install and unit tests: run install.sh, a stand-in venv, tree digests."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from helpers import ROOT, SRC

INSTALL = ROOT / "systemd" / "install.sh"


def run_install(*args: str) -> subprocess.CompletedProcess[str]:
    """Run systemd/install.sh ARGS to completion."""
    return subprocess.run(
        ["bash", str(INSTALL), *args], capture_output=True, text=True, check=False, timeout=300
    )


def fake_venv(root: Path) -> Path:
    """Stand in for a pre-built /opt/fleetbeat/venv: bin/fleetbeat runs this checkout."""
    exe = root / "opt/fleetbeat/venv/bin/fleetbeat"
    exe.parent.mkdir(parents=True, exist_ok=True)
    exe.write_text(f'#!/bin/sh\nPYTHONPATH="{SRC}" exec "{sys.executable}" -m fleetbeat "$@"\n')
    exe.chmod(0o755)
    return exe


def tree_digest(root: Path) -> dict[str, tuple[object, ...]]:
    """Every path under root with its type, mode, size, mtime, link target and content hash."""
    found: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            link = os.readlink(path) if path.is_symlink() else ""
            content = ""
            if path.is_file() and not path.is_symlink():
                content = hashlib.sha256(path.read_bytes()).hexdigest()
            found[str(path.relative_to(root))] = (st.st_mode, st.st_size, st.st_mtime_ns, link,
                                                  content)  # fmt: skip
    return found


def add_systemd_tree(root: Path) -> None:
    """What `systemd-analyze verify --root` needs besides our units: targets and /bin/kill."""
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    (root / "bin").mkdir(exist_ok=True)
    shutil.copy2("/bin/kill", root / "bin/kill")
