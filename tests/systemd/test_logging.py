"""Logging under systemd: journald priority prefixes and no timestamps; otherwise timestamps."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from fleetbeat.logutil import JournalFormatter, is_journal_stream
from helpers import agent_toml, fleetbeat_cmd, subprocess_env, wait_until

STAMPED = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (INFO|WARNING|ERROR|DEBUG) ")


def record(level: int, msg: str, exc_info=None) -> logging.LogRecord:
    return logging.LogRecord("fleetbeat.x", level, __file__, 1, msg, None, exc_info)


def test_journal_formatter_prefixes_every_line_with_the_syslog_priority():
    """<3> error, <4> warning, <6> info, <7> debug; each traceback line carries the prefix too."""
    fmt = JournalFormatter()
    assert fmt.format(record(logging.ERROR, "boom")) == "<3>fleetbeat.x: boom"
    assert fmt.format(record(logging.WARNING, "hm")) == "<4>fleetbeat.x: hm"
    assert fmt.format(record(logging.INFO, "ok")) == "<6>fleetbeat.x: ok"
    assert fmt.format(record(logging.DEBUG, "dbg")) == "<7>fleetbeat.x: dbg"
    assert fmt.format(record(logging.CRITICAL, "dead")) == "<2>fleetbeat.x: dead"
    try:
        raise ValueError("bad")
    except ValueError:
        lines = fmt.format(record(logging.ERROR, "failed", sys.exc_info())).splitlines()
    assert len(lines) > 2
    assert all(line.startswith("<3>") for line in lines)


def test_journal_stream_must_match_stderr(tmp_path, monkeypatch):
    """JOURNAL_STREAM counts only if it names the very stream (device:inode) we write to."""
    with open(tmp_path / "log", "w") as f:
        st = os.fstat(f.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        assert is_journal_stream(f)
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino + 1}")
        assert not is_journal_stream(f)
        monkeypatch.delenv("JOURNAL_STREAM")
        assert not is_journal_stream(f)


def run_agent(tmp_path, journal: bool, config: str) -> tuple[subprocess.Popen[bytes], Path]:
    """Start an agent whose stderr goes to a file; with journal=True, JOURNAL_STREAM names it."""
    (tmp_path / "agent.toml").write_text(config)
    log = tmp_path / "stderr.log"
    with open(log, "w") as f:
        st = os.fstat(f.fileno())
        extra = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"} if journal else {}
        proc = subprocess.Popen(fleetbeat_cmd("agent", "-c", str(tmp_path / "agent.toml")),
                                stdout=f, stderr=f, env=subprocess_env(**extra))  # fmt: skip
    return proc, log


def test_agent_logs_journald_style_under_systemd(tmp_path, udp_receiver):
    """With JOURNAL_STREAM: `<6>` info and `<3>` error lines, no timestamps anywhere."""
    proc, log = run_agent(tmp_path, True, agent_toml(udp_receiver.port))
    try:
        udp_receiver.wait_for(lambda ms: len(ms) >= 2)
        (tmp_path / "agent.toml").write_text("[agent]\nheartbeat_interval = 0\n")
        proc.send_signal(signal.SIGHUP)  # an invalid reload logs errors
        wait_until(lambda: "reload rejected" in log.read_text())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(5) == 0
    finally:
        proc.kill()
        proc.wait()
    lines = log.read_text().splitlines()
    assert all(re.match(r"<[2-7]>fleetbeat[.\w]*: ", line) for line in lines), lines
    assert any(line.startswith("<6>fleetbeat.agent.runtime: fleetbeat agent") for line in lines)
    assert any(line.startswith("<3>") and "reload rejected" in line for line in lines)
    assert not any(STAMPED.match(line[3:]) for line in lines)


def test_agent_logs_timestamps_outside_systemd(tmp_path, udp_receiver):
    """Without JOURNAL_STREAM the lines are human-readable, with timestamp and level name."""
    proc, log = run_agent(tmp_path, False, agent_toml(udp_receiver.port))
    try:
        udp_receiver.wait_for(lambda ms: len(ms) >= 2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(5) == 0
    finally:
        proc.kill()
        proc.wait()
    lines = log.read_text().splitlines()
    assert lines
    assert all(STAMPED.match(line) for line in lines), lines


def test_config_errors_at_start_are_error_priority_in_the_journal(tmp_path):
    """An invalid config under journald: `<3>` lines naming the key, exit 78."""
    proc, log = run_agent(tmp_path, True, "[agent]\nheartbeat_interval = 0\n")
    assert proc.wait(10) == 78
    lines = log.read_text().splitlines()
    assert lines[0] == "<3>fleetbeat: 1 config error:"
    assert lines[1].startswith("<3>  ") and "agent.heartbeat_interval" in lines[1]
