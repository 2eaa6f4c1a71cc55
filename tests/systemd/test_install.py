"""systemd/install.sh in a throwaway root: the files it lays down, idempotence, uninstall."""

from __future__ import annotations

import os
import stat
import subprocess

import pytest
from systemd_helpers import INSTALL, fake_venv, run_install, tree_digest

from helpers import ROOT

EXAMPLE = ROOT / "examples" / "agent.toml"


def test_install_lays_down_venv_unit_config_and_enables_it(install_root):
    """An agent install: unit copied and enabled, config from the example, empty 0600 secret."""
    result = run_install("agent", "--root", str(install_root), "--no-venv")
    assert result.returncode == 0, result.stderr
    unit = install_root / "etc/systemd/system/fleetbeat-agent.service"
    assert unit.read_text() == (ROOT / "systemd/fleetbeat-agent.service").read_text()
    wants = install_root / "etc/systemd/system/multi-user.target.wants/fleetbeat-agent.service"
    assert os.readlink(wants) == "/etc/systemd/system/fleetbeat-agent.service"

    config = install_root / "etc/fleetbeat/agent.toml"
    assert stat.S_IMODE(config.stat().st_mode) == 0o644
    lines = config.read_text().splitlines()
    assert "# device_id = " in config.read_text()  # the hostname, not the example's device
    assert not any(line.startswith(("device_id", "tags")) for line in lines)
    assert len(lines) == len(EXAMPLE.read_text().splitlines())
    for name in ("mqtt-password", "amqp-password", "kafka-password", "key"):
        secret = install_root / "etc/fleetbeat" / name
        assert secret.read_bytes() == b""
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert (install_root / "opt/fleetbeat/README.md").is_file()
    assert "agent.toml is valid" in result.stdout  # check-config ran before enabling
    assert "not started" in result.stdout


@pytest.mark.parametrize("name", ["agent", "collector"])
def test_a_second_run_changes_nothing(install_root, name):
    """Running the install again leaves every file, mode, mtime and link exactly as it was."""
    assert run_install(name, "--root", str(install_root), "--no-venv").returncode == 0
    before = tree_digest(install_root)
    again = run_install(name, "--root", str(install_root), "--no-venv")
    assert again.returncode == 0, again.stderr
    assert tree_digest(install_root) == before
    assert "up to date" in again.stdout


def test_an_existing_config_is_never_overwritten(install_root):
    """A config the administrator wrote survives an install byte for byte."""
    config = install_root / "etc/fleetbeat/agent.toml"
    config.parent.mkdir(parents=True)
    config.write_text('[agent]\ndevice_id = "mine"\n')
    assert run_install("agent", "--root", str(install_root), "--no-venv").returncode == 0
    assert config.read_text() == '[agent]\ndevice_id = "mine"\n'


def test_an_invalid_config_stops_the_install_before_the_unit(install_root):
    """check-config fails: exit 78 with the error shown, and no unit is installed or enabled."""
    config = install_root / "etc/fleetbeat/agent.toml"
    config.parent.mkdir(parents=True)
    config.write_text("[agent]\nheartbeat_interval = -1\n")
    result = run_install("agent", "--root", str(install_root), "--no-venv")
    assert result.returncode == 78
    assert "agent.heartbeat_interval" in result.stderr
    assert not (install_root / "etc/systemd/system/fleetbeat-agent.service").exists()


def test_collector_install_works_with_or_without_its_example(install_root):
    """The collector gets its unit and a config (the example, or embedded defaults without it)."""
    result = run_install("collector", "--root", str(install_root), "--no-venv")
    assert result.returncode == 0, result.stderr
    assert (install_root / "etc/systemd/system/fleetbeat-collector.service").is_file()
    config = (install_root / "etc/fleetbeat/collector.toml").read_text()
    example = ROOT / "examples/collector.toml"
    if example.exists():
        assert len(config.splitlines()) == len(example.read_text().splitlines())
    else:
        assert "embedded defaults" in config


def test_uninstall_removes_units_and_venv_but_keeps_the_config(install_root):
    """Uninstall keeps /etc/fleetbeat; the shared venv goes with the last fleetbeat unit."""
    for name in ("agent", "collector"):
        assert run_install(name, "--root", str(install_root), "--no-venv").returncode == 0
    venv = install_root / "opt/fleetbeat/venv"

    assert run_install("agent", "--root", str(install_root), "--uninstall").returncode == 0
    assert not (install_root / "etc/systemd/system/fleetbeat-agent.service").exists()
    assert not (install_root / "etc/systemd/system/multi-user.target.wants/fleetbeat-agent.service"
                ).is_symlink()  # fmt: skip
    assert venv.is_dir()  # the collector still uses it

    result = run_install("collector", "--root", str(install_root), "--uninstall")
    assert result.returncode == 0
    assert not (install_root / "opt/fleetbeat").exists()
    assert (install_root / "etc/fleetbeat/agent.toml").is_file()
    assert (install_root / "etc/fleetbeat/mqtt-password").is_file()
    before = tree_digest(install_root)
    again = run_install("collector", "--root", str(install_root), "--uninstall")
    assert again.returncode == 0 and "not installed" in again.stdout
    assert tree_digest(install_root) == before


def test_usage_errors_exit_2():
    """No service name, or an unknown option: usage on stderr, exit 2."""
    for args in ((), ("agent", "--frobnicate")):
        result = run_install(*args)
        assert result.returncode == 2
        assert "Usage" in result.stderr or "usage" in result.stderr.lower()


@pytest.mark.slow
def test_real_venv_install_builds_a_working_fleetbeat(tmp_path):
    """Without --no-venv: a real venv with fleetbeat pip-installed; a second run reinstalls nothing.

    Needs the Python package index (or a configured mirror) for fleetbeat's dependencies.
    """
    root = tmp_path / "root"
    result = run_install("agent", "--root", str(root))
    assert result.returncode == 0, result.stdout + result.stderr
    fleetbeat = root / "opt/fleetbeat/venv/bin/fleetbeat"
    version = subprocess.run([str(fleetbeat), "--version"], capture_output=True, text=True,
                             check=True)  # fmt: skip
    assert version.stdout.startswith("fleetbeat ")
    before = tree_digest(root)
    again = run_install("agent", "--root", str(root))
    assert again.returncode == 0
    assert "venv is up to date" in again.stdout
    assert tree_digest(root) == before


def test_without_systemctl_the_root_gets_the_same_tree(tmp_path):
    """On a build machine without systemctl, --root yields exactly what `systemctl --root` does."""
    bin_dir = tmp_path / "bin"  # every command of /usr/bin but systemctl
    bin_dir.mkdir()
    for name in os.listdir("/usr/bin"):
        if name != "systemctl":
            (bin_dir / name).symlink_to(f"/usr/bin/{name}")
    trees = []
    for label, path in (("with", os.environ["PATH"]), ("without", str(bin_dir))):
        root = tmp_path / label
        fake_venv(root)
        env = {**os.environ, "PATH": path}
        for args in (("agent",), ("collector",), ("collector", "--uninstall")):
            cmd = ["bash", str(INSTALL), *args, "--root", str(root), "--no-venv"]
            result = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
            assert result.returncode == 0, result.stderr
        trees.append({p: (v[0], v[3]) for p, v in tree_digest(root).items()})  # mode, link
    assert trees[0] == trees[1]
    assert "etc/systemd/system/multi-user.target.wants/fleetbeat-agent.service" in trees[1]
