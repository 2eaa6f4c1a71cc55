"""The line formats are configurable by name, documented samples parse, drops are counted."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetbeat.agent.pipeline import Emitter
from fleetbeat.outputs.base import Identity, Outgoing
from fleetbeat.outputs.udp import UdpConfig, UdpOutput
from fleetbeat.registry import encoder_class
from helpers import run_cli

IDENTITY = Identity(dev="d", run="0" * 16, boot_time=0, version="t", tags={})


@pytest.mark.parametrize("fmt", ["statsd", "dogstatsd", "influx"])
def test_format_is_registered_and_builds(fmt):
    """Each line format is in ENCODERS and builds from a UDP output config."""
    encoder = encoder_class(fmt)(IDENTITY, prefix="fleetbeat")
    payloads, too_large = encoder.encode(
        Outgoing("rd", ts=1.0, src="s", metrics={"x": 1}), lambda: 0, 1432
    )
    assert too_large == 0 and len(payloads) == 1


def test_check_config_suggests_the_format_name(tmp_path: Path):
    """A misspelt format is a config error naming the key and the closest format."""
    path = tmp_path / "agent.toml"
    path.write_text('[[outputs.udp]]\nformat = "influxx"\n')
    result = run_cli("check-config", str(path))
    assert result.returncode == 78
    assert 'outputs.udp[0].format: expected one of "json", "statsd", "dogstatsd", "influx"' in (
        result.stderr
    )
    assert 'did you mean "influx"?' in result.stderr


@pytest.mark.parametrize("fmt", ["statsd", "dogstatsd", "influx"])
def test_oversize_line_is_a_counted_drop_on_a_real_socket(udp_receiver, fmt):
    """Through a real UDP output a line over max_datagram is counted as too_large, the rest sent."""
    config = UdpConfig(port=udp_receiver.port, max_datagram=256)
    output = UdpOutput(config)
    emitter = Emitter(output, encoder_class(fmt)(IDENTITY, prefix="fleetbeat"))
    output.start()
    try:
        emitter.emit(Outgoing("rd", ts=1.0, src="s", metrics={"y" * 300: 1, "ok": 2}))
    finally:
        output.close()
    (datagram,) = udp_receiver.poll(2.0)
    assert b"ok" in datagram and b"yyy" not in datagram
    assert output.tally.by_reason == {"too_large": 1}
    assert output.tally.sent == 1
    assert emitter.seq == {"hb": 0, "rd": 1}
