"""The serial sensor on real pseudo-terminals: lines become readings, faults are counted."""

from __future__ import annotations

import math
import subprocess
import sys
import threading
import time
from functools import reduce

import pytest
import serial
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetbeat.agent.config import parse_agent_config
from fleetbeat.errors import ConfigError
from fleetbeat.sensors.line_formats import LineAssembler
from fleetbeat.sensors.serial_port import SerialConfig, SerialSensor
from helpers import wait_until

FAST = {"reopen_delay": 0.05, "reopen_max": 0.1}


class Readings:
    """What a started sensor emitted (the agent's Channel.offer in production)."""

    def __init__(self) -> None:
        self.items: list[dict[str, float]] = []
        self.lock = threading.Lock()

    def __call__(self, metrics: dict[str, float]) -> None:
        with self.lock:
            self.items.append(dict(metrics))

    def after_marker(self, key: str = "sync") -> list[dict[str, float]]:
        with self.lock:
            idx = max((i for i, m in enumerate(self.items) if key in m), default=-1)
            return [m for m in self.items[idx + 1 :] if key not in m]


@pytest.fixture
def run_sensor():
    """Start SerialSensors with a Readings sink; every one is stopped at teardown."""
    started: list[SerialSensor] = []

    def start(**cfg: object) -> tuple[SerialSensor, Readings]:
        sensor = SerialSensor(SerialConfig(**{**FAST, **cfg}))  # type: ignore[arg-type]
        got = Readings()
        sensor.start(got)
        started.append(sensor)
        return sensor, got

    yield start
    for sensor in started:
        sensor.stop()


def sync(port, got: Readings, line: str = "sync=1\n", key: str = "sync") -> None:
    """Write a marker line until the sensor has read it: the port is open and in step."""

    def seen() -> bool:
        port.write(line)
        time.sleep(0.03)
        return any(key in m for m in got.items)

    wait_until(seen, timeout=5)
    with got.lock:
        got.items.clear()


def nmea(body: str, *, corrupt: bool = False) -> str:
    checksum = reduce(lambda acc, ch: acc ^ ord(ch), body, 0) ^ (0x5A if corrupt else 0)
    return f"${body}*{checksum:02X}\r\n"


# --- reading -----------------------------------------------------------------------


def test_kv_lines_become_readings(pty_port, run_sensor):
    """Each kv line written on the device side arrives as one reading, in order."""
    sensor, got = run_sensor(port=str(pty_port.path))
    sync(pty_port, got)
    pty_port.write("".join(f"temp={20 + i} hum=40\r\n" for i in range(5)))
    wait_until(lambda: len(got.items) >= 5)
    assert got.items == [{"temp": 20.0 + i, "hum": 40.0} for i in range(5)]
    assert sensor.state == "open"


def test_metrics_filter_scale_and_offset(pty_port, run_sensor):
    """Only the kept metrics are emitted, converted as value * scale + offset."""
    _, got = run_sensor(
        port=str(pty_port.path),
        metrics=("temp", "hum", "sync"),
        scale={"temp": 0.1},
        offset={"temp": -40.0},
    )
    sync(pty_port, got)
    pty_port.write("temp=615 hum=40 noise=3\n")
    wait_until(lambda: got.items)
    assert got.items == [{"temp": pytest.approx(21.5), "hum": 40.0}]


def test_nmea_good_and_bad_checksums_through_the_port(pty_port, run_sensor):
    """Good GPS sentences become readings; a bad checksum is dropped and counted."""
    good = nmea("GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,")
    sensor, got = run_sensor(port=str(pty_port.path), format="nmea", baudrate=4800)
    sync(pty_port, got, nmea("GPRMC,1,V,,,,,,,230394,,"), key="fix_valid")
    bad = nmea("GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,999.9,M,46.9,M,,", corrupt=True)
    pty_port.write(bad + good + bad)
    wait_until(lambda: sensor.errors.by_reason.get("bad_checksum") == 2)
    wait_until(lambda: got.items)
    assert len(got.items) == 1
    assert got.items[0]["alt"] == 545.4


def test_csv_with_header_through_the_port(pty_port, run_sensor):
    """A csv device that reprints its header is read; the header is not an error."""
    sensor, got = run_sensor(
        port=str(pty_port.path), format="csv", fields=("temp", "hum"), skip_header=True
    )
    sync(pty_port, got, "-999,-999\n", key="temp")
    pty_port.write("temp,hum\n21.5,40\n21.5\n22,41\n")
    wait_until(lambda: len(got.items) >= 2)
    assert got.items == [{"temp": 21.5, "hum": 40.0}, {"temp": 22.0, "hum": 41.0}]
    wait_until(lambda: sensor.errors.by_reason.get("wrong_field_count") == 1)
    assert "header" not in sensor.errors.by_reason


# --- faults ------------------------------------------------------------------------


def test_absent_port_is_retried_with_capped_backoff_then_read(pty_port, run_sensor):
    """A port absent at start is counted and retried at a capped delay until it appears."""
    pty_port.unplug(remove_link=True)
    sensor, got = run_sensor(port=str(pty_port.path))
    time.sleep(1.5)
    absent = sensor.errors.by_reason.get("port_absent", 0)
    assert 8 <= absent <= 40  # capped at 0.1 s: about 15; uncapped doubling would give 5
    assert sensor.state == "absent"
    assert got.items == []
    pty_port.replug()
    sync(pty_port, got)
    pty_port.write("temp=1\n")
    wait_until(lambda: got.items == [{"temp": 1.0}])


def test_unplug_mid_stream_and_replug_resume_without_restart(pty_port, run_sensor):
    """Unplugging cuts a line (counted), the port is reopened, readings resume on replug."""
    sensor, got = run_sensor(port=str(pty_port.path))
    sync(pty_port, got)
    pty_port.write("temp=1\ntemp=2 hu")  # the second line is cut by the unplug
    wait_until(lambda: got.items == [{"temp": 1.0}])
    time.sleep(0.05)
    pty_port.unplug()
    wait_until(lambda: sensor.errors.by_reason.get("unplugged") == 1)
    wait_until(lambda: sensor.errors.by_reason.get("port_absent", 0) >= 1)
    assert sensor.errors.by_reason.get("partial_line", 0) >= 1
    pty_port.replug()
    sync(pty_port, got)
    pty_port.write("temp=3\n")
    wait_until(lambda: got.items == [{"temp": 3.0}])
    assert sensor.errors.by_reason["unplugged"] == 1


def test_binary_noise_and_wrong_baud_gibberish_never_become_readings(pty_port, run_sensor):
    """Invalid bytes are counted (bad_encoding, bad_line) and only real values get out."""
    sensor, got = run_sensor(port=str(pty_port.path))
    sync(pty_port, got)
    noise = bytes((i * 37 + 11) % 256 for i in range(3000))  # every byte value, no order
    gibberish = b"\xf8\x80\xfe\xe0x\x9c\n" * 5 + b"~~x}}\x06\x06|\n" * 3
    pty_port.write(noise + b"\n" + gibberish + b"temp=5 hum=50\n")
    wait_until(lambda: {"temp": 5.0, "hum": 50.0} in got.items)
    errors = sensor.errors.by_reason
    assert errors.get("bad_encoding", 0) >= 5
    assert errors.get("bad_line", 0) >= 3
    for reading in got.items:
        assert all(math.isfinite(v) for v in reading.values())
        assert all(name.isprintable() for name in reading)


def test_over_long_unterminated_line_is_capped_and_counted(pty_port, run_sensor):
    """A line growing past max_line is dropped with its tail, counted once, memory bounded."""
    sensor, got = run_sensor(port=str(pty_port.path), max_line=1024)
    sync(pty_port, got)
    pty_port.write(b"temp=" + b"9" * 10_000)
    wait_until(lambda: sensor.errors.by_reason.get("line_too_long") == 1)
    pty_port.write(b"9" * 5_000 + b"\ntemp=7\n")
    wait_until(lambda: got.items)
    assert got.items == [{"temp": 7.0}]
    assert sensor.errors.by_reason["line_too_long"] == 1
    assert "bad_line" not in sensor.errors.by_reason


def test_port_held_by_another_process_is_busy_until_released(pty_port, run_sensor):
    """With exclusive = true a port another process locked counts port_busy, then is read."""
    code = (
        "import serial, sys, time; p = serial.Serial(sys.argv[1], exclusive=True); "
        "print('held', flush=True); time.sleep(30)"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(pty_port.path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        sensor, got = run_sensor(port=str(pty_port.path))
        wait_until(lambda: sensor.errors.by_reason.get("port_busy", 0) >= 2)
        assert sensor.state == "busy"
    finally:
        holder.kill()
        holder.wait(5)
    sync(pty_port, got)
    pty_port.write("temp=2\n")
    wait_until(lambda: got.items == [{"temp": 2.0}])


def test_stop_is_prompt_while_reading(pty_port, run_sensor):
    """stop() returns well within a second while the reader waits for data."""
    sensor, got = run_sensor(port=str(pty_port.path))
    sync(pty_port, got)
    t0 = time.monotonic()
    sensor.stop()
    assert time.monotonic() - t0 < 0.5
    assert sensor.state == "stopped"
    assert not any(t.name == "serial serial" for t in threading.enumerate())


def test_stop_is_prompt_while_waiting_to_reopen(pty_port, run_sensor):
    """stop() does not wait out a long reopen delay."""
    pty_port.unplug(remove_link=True)
    sensor, _ = run_sensor(port=str(pty_port.path), reopen_delay=30, reopen_max=60)
    wait_until(lambda: sensor.errors.by_reason.get("port_absent"))
    t0 = time.monotonic()
    sensor.stop()
    assert time.monotonic() - t0 < 0.5


# --- `fleetbeat sensors` -----------------------------------------------------------


def test_report_absent_port(tmp_path):
    """The report says a missing port is absent, at once."""
    sensor = SerialSensor(SerialConfig(port=str(tmp_path / "ttyACM9")))
    t0 = time.monotonic()
    rows = sensor.report()
    assert time.monotonic() - t0 < 0.5
    assert rows[0] == ("port", str(tmp_path / "ttyACM9"), "absent")


def test_report_shows_the_last_line_and_its_metrics(pty_port):
    """With a talking device the report shows the line it read and the parsed metrics."""
    stop = threading.Event()

    def device() -> None:
        while not stop.is_set():
            pty_port.write("temp=21.5 hum=40\n")
            time.sleep(0.1)

    talker = threading.Thread(target=device)
    talker.start()
    try:
        rows = SerialSensor(SerialConfig(port=str(pty_port.path))).report()
    finally:
        stop.set()
        talker.join()
    assert rows[0] == ("port", str(pty_port.path), "present")
    assert ("last line", "'temp=21.5 hum=40'", "format kv") in rows
    assert ("temp", "21.5", "") in rows
    assert ("hum", "40", "") in rows


def test_report_silent_port_gives_up_after_two_seconds(pty_port):
    """A present but silent port is reported as such, without hanging."""
    t0 = time.monotonic()
    rows = SerialSensor(SerialConfig(port=str(pty_port.path))).report()
    assert time.monotonic() - t0 < 3.0
    assert rows == [("port", str(pty_port.path), "present"), ("last line", "-", "none within 2 s")]


def test_report_busy_port(pty_port):
    """A port held by another program is reported present but busy."""
    with serial.Serial(str(pty_port.path), exclusive=True):
        rows = SerialSensor(SerialConfig(port=str(pty_port.path))).report()
    assert rows[0] == ("port", str(pty_port.path), "present, cannot open: busy")


# --- line assembly -----------------------------------------------------------------


def test_line_assembler_joins_chunks_and_accepts_every_line_ending():
    """Lines split across reads are joined; LF, CR and CRLF all end a line."""
    counted: list[str] = []
    lines = LineAssembler(64, counted.append)
    assert lines.feed(b"temp=2") == []
    assert lines.feed(b"1\r\nhum=4") == [b"temp=21"]
    assert lines.feed(b"0\rpres=1\n\n\n") == [b"hum=40", b"pres=1"]
    assert counted == []


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from([b"a=1", b"bb", b"\n", b"\r", b"\r\n", b"x" * 7]), max_size=60),
    st.data(),
)
def test_line_assembler_output_does_not_depend_on_how_bytes_are_chunked(pieces, data):
    """Feeding a stream in any chunks gives the same lines as feeding it at once."""
    stream = b"".join(pieces)
    whole = LineAssembler(12, lambda reason: None).feed(stream)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    chunked = LineAssembler(12, lambda reason: None)
    got: list[bytes] = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)]):
        got += chunked.feed(stream[start:end])
    assert got == whole


def test_line_assembler_caps_memory_and_resyncs_at_the_next_line_end():
    """Past max_line the buffer is dropped once, the rest of that line skipped, then normal."""
    counted: list[str] = []
    lines = LineAssembler(16, counted.append)
    for _ in range(100):
        assert lines.feed(b"x" * 10) == []
        assert lines.pending <= 16
    assert lines.feed(b"xxx\nok=1\n" + b"y" * 40 + b"\nok=2\n") == [b"ok=1", b"ok=2"]
    assert counted == ["line_too_long", "line_too_long"]


# --- configuration -----------------------------------------------------------------


def test_config_problems_are_reported_with_key_paths():
    """Every invalid serial key is reported at once, naming its path."""
    doc = {
        "sensors": {
            "serial": [
                {"name": "a", "format": "csv", "stopbits": 3, "encoding": "klingon"},
                {"name": "b", "port": "/dev/x", "format": "regex", "pattern": "(unnamed)"},
                {"name": "c", "port": "/dev/y", "metrics": ["t"], "scale": {"h": 2}},
                {"name": "d", "port": "/dev/z", "parity": "evn", "baudrate": "fast"},
            ]
        }
    }
    with pytest.raises(ConfigError) as err:
        parse_agent_config(doc, "agent.toml")
    text = str(err.value)
    for expected in [
        "sensors.serial[0].port: required",
        'sensors.serial[0].fields: format "csv" needs fields',
        "sensors.serial[0].stopbits: expected 1, 1.5 or 2, got 3",
        'sensors.serial[0].encoding: unknown text encoding "klingon"',
        "sensors.serial[1].pattern: not a usable pattern",
        "sensors.serial[2].scale.h: not one of the kept metrics",
        'sensors.serial[3].parity: expected one of "none", "even"',
        'did you mean "even"?',
        'sensors.serial[3].baudrate: expected an integer from 50 to 4000000, got "fast"',
    ]:
        assert expected in text


def test_config_valid_serial_sensor():
    """A complete serial table validates into a SerialConfig with its sampling."""
    doc = {
        "sensors": {
            "serial": {
                "name": "gps",
                "port": "/dev/serial0",
                "format": "nmea",
                "stopbits": 1.5,
                "sampling": {"reduce": "last", "every": "5s"},
            }
        }
    }
    config = parse_agent_config(doc, "agent.toml")
    [comp] = [c for c in config.sensors if c.type == "serial"]
    cfg = comp.config
    assert (cfg.name, cfg.port, cfg.stopbits, comp.sampling.every) == (
        "gps",
        "/dev/serial0",
        1.5,
        5,
    )


def test_two_serial_sensors_need_distinct_names():
    """Two serial sensors left with the default name are refused."""
    doc = {"sensors": {"serial": [{"port": "/dev/a"}, {"port": "/dev/b"}]}}
    with pytest.raises(ConfigError, match='two sensors are named "serial"'):
        parse_agent_config(doc, "agent.toml")


def test_pyserial_and_pynmea2_load_only_when_needed():
    """Building a kv serial sensor imports neither library; pyserial loads on open, pynmea2
    only for format nmea."""
    code = (
        "import sys\n"
        "from fleetbeat.sensors.serial_port import SerialConfig, SerialSensor\n"
        "s = SerialSensor(SerialConfig(port='/nonexistent/tty'))\n"
        "print('serial' in sys.modules, 'pynmea2' in sys.modules)\n"
        "s.open_port()\n"
        "print('serial' in sys.modules, 'pynmea2' in sys.modules)\n"
        "SerialSensor(SerialConfig(port='/x', format='nmea'))\n"
        "print('pynmea2' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    assert out.split("\n")[:3] == ["False False", "True False", "True"]
