"""End to end: a real `fleetbeat agent` reads serial lines from a pty and sends them over UDP."""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

import pytest

from fleetbeat import wire
from fleetbeat.agent.config import parse_agent_config
from fleetbeat.config.loader import read_toml
from helpers import ROOT, agent_toml, run_cli, wait_until


def serial_block(path: Path, name: str = "weather", extra: str = "") -> str:
    return f"""
[[sensors.serial]]
name = "{name}"
port = "{path}"
reopen_delay = "50ms"
reopen_max = "100ms"
{extra}
"""


def config(port: int, *blocks: str) -> str:
    return agent_toml(port, system="enabled = false") + "".join(blocks)


def readings(msgs, src="weather"):
    return [m for m in msgs if m["k"] == "rd" and m["src"] == src]


def errors(msgs, src="weather"):
    hbs = [m for m in msgs if m["k"] == "hb" and src in m.get("err", {})]
    return hbs[-1]["err"][src] if hbs else {}


def test_agent_sends_serial_readings_and_counts_garbage(pty_port, feed, udp_receiver, start_agent):
    """Good lines arrive as rd messages with contiguous seq; garbage is counted in hb err."""
    start_agent(config(udp_receiver.port, serial_block(pty_port.path)))
    feed(pty_port, lambda i: f"n={i} temp=21.5\n" if i % 4 else "\x00\x01 garbage \x7f\n")
    msgs = udp_receiver.wait_for(
        lambda ms: len(readings(ms)) >= 20 and errors(ms).get("bad_line", 0) >= 3
    )
    rds = readings(msgs)
    assert all(m["m"]["temp"] == 21.5 and m["m"]["n"] % 4 for m in rds)
    ns = [m["m"]["n"] for m in rds]
    assert ns == sorted(ns)
    seqs = [m["seq"] for m in msgs if m["k"] == "rd"]
    assert seqs == list(range(len(seqs)))
    for datagram in udp_receiver.datagrams:
        wire.parse(datagram)  # every datagram is valid wire v1


def test_agent_keeps_running_through_unplug_and_replug(pty_port, feed, udp_receiver, start_agent):
    """Unplug is counted while heartbeats go on; after replug readings resume, same run."""
    agent = start_agent(config(udp_receiver.port, serial_block(pty_port.path)))
    feeder = feed(pty_port, lambda i: f"temp={i}\n")
    msgs = udp_receiver.wait_for(lambda ms: len(readings(ms)) >= 5)
    run = msgs[0]["run"]
    feeder.stop()
    pty_port.unplug()
    msgs = udp_receiver.wait_for(
        lambda ms: errors(ms).get("unplugged") == 1 and errors(ms).get("port_absent", 0) >= 2
    )
    before = len(readings(msgs))
    pty_port.replug()
    feed(pty_port, lambda i: f"temp={1000 + i}\n")
    msgs = udp_receiver.wait_for(lambda ms: len(readings(ms)) >= before + 5)
    assert any(m["m"]["temp"] >= 1000 for m in readings(msgs))
    assert {m["run"] for m in msgs} == {run}
    assert agent.proc.poll() is None
    agent.signal(signal.SIGTERM)
    t0 = time.monotonic()
    assert agent.wait(2) == 0
    assert time.monotonic() - t0 < 1.0
    udp_receiver.wait_for(lambda ms: ms[-1]["k"] == "bye")


def test_absent_port_does_not_stop_other_sensors(pty_port, tmp_path, feed, udp_receiver,
                                                 start_agent):  # fmt: skip
    """A serial sensor whose port never appears is counted; another keeps sending."""
    blocks = (
        serial_block(tmp_path / "ttyUSB7", name="missing"),
        serial_block(pty_port.path, name="weather"),
    )
    start_agent(config(udp_receiver.port, *blocks))
    feed(pty_port, lambda i: f"hum={i % 100}\n")
    msgs = udp_receiver.wait_for(
        lambda ms: len(readings(ms)) >= 10 and errors(ms, "missing").get("port_absent", 0) >= 3
    )
    assert readings(msgs, "missing") == []
    assert sum(m["k"] == "hb" for m in msgs) >= 3


def test_high_rate_port_is_reduced_to_one_reading_per_window(pty_port, udp_receiver, start_agent):
    """Thousands of lines through reduce = "mean" give one mean value per window."""
    block = serial_block(
        pty_port.path, extra='[sensors.serial.sampling]\nreduce = "mean"\nevery = "0.5s"\n'
    )
    start_agent(config(udp_receiver.port, block))
    wait_until(udp_receiver.messages, timeout=10)  # the agent is up
    time.sleep(0.3)
    chunk = "".join(f"v={v}\n" for v in (10, 20, 30, 40) * 500)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 1.2:
        pty_port.write(chunk)
        time.sleep(0.05)
    udp_receiver.wait_for(lambda ms: len(readings(ms)) >= 2, timeout=5)
    time.sleep(0.6)
    rds = readings(udp_receiver.messages())
    assert 2 <= len(rds) <= 6  # about 1.2 s / 0.5 s windows, not thousands
    assert all(m["m"]["v"] == pytest.approx(25.0, abs=0.5) for m in rds)


def test_sensors_command_shows_serial_ports(pty_port, tmp_path):
    """`fleetbeat sensors` lists each serial sensor with its port present or absent."""
    cfg = tmp_path / "agent.toml"
    cfg.write_text(
        serial_block(pty_port.path, name="here")
        + serial_block(tmp_path / "gone", name="gone")
        + '[sensors.system]\ninclude = ["cpu"]\n'
    )
    t0 = time.monotonic()
    result = run_cli("sensors", "-c", str(cfg), "--settle", "0.1")
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - t0 < 10
    out = result.stdout
    assert re.search(r"== serial here\n\s+port\s+\S+ttyUSB0\s+present\n\s+last line", out)
    assert re.search(r"== serial gone\n\s+port\s+\S+gone\s+absent", out)


# --- documentation samples ---------------------------------------------------------


def test_every_example_file_is_valid():
    """Each examples/*.toml for the agent validates (its example file paths need not exist)."""
    files = sorted((ROOT / "examples").glob("agent*.toml"))
    assert files
    for path in files:
        parse_agent_config(read_toml(str(path)), str(path), check_files=False)


def test_the_example_serial_block_is_complete():
    """examples/agent.toml carries a commented serial block with every key of the sensor."""
    from fleetbeat.config import frozen as dataclasses
    from fleetbeat.sensors.serial_port import SerialConfig

    text = (ROOT / "examples" / "agent.toml").read_text()
    block = text.split("[[sensors.serial]]", 1)[1].split("[[outputs", 1)[0]
    for f in dataclasses.fields(SerialConfig):
        assert re.search(rf"^#? ?{f.name} = ", block, re.M), f.name
