"""StatsD and DogStatsD encoders: names, values, heartbeats, packing, negative gauges."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from line_parsers import LineError, apply_gauges, parse_statsd_line

from fleetbeat.outputs.base import Identity, Outgoing
from fleetbeat.outputs.statsd_lines import DogStatsdEncoder, StatsdEncoder, clean_name
from helpers import Seq

TS = 1764160000.25
BOOT = 1764150000


def ident(dev: str = "pi-kitchen", **tags: str) -> Identity:
    return Identity(dev=dev, run="9f1c2a7b3d4e5f60", boot_time=BOOT, version="0.1.0", tags=tags)


def lines(payloads: list[bytes]) -> list[str]:
    return [line for p in payloads for line in p.decode().split("\n")]


def test_readings_are_gauges_named_prefix_device_source_metric():
    """A reading becomes one `{prefix}.{dev}.{src}.{metric}:{value}|g` line per metric."""
    enc = StatsdEncoder(ident(), prefix="fb")
    msg = Outgoing("rd", ts=TS, src="system", metrics={"cpu": 3.5, "procs": 173, "disk.root": 41.0})
    payloads, too_large = enc.encode(msg, Seq(), 1432)
    assert too_large == 0
    assert payloads == [
        b"fb.pi-kitchen.system.cpu:3.5|g\n"
        b"fb.pi-kitchen.system.procs:173|g\n"
        b"fb.pi-kitchen.system.disk.root:41.0|g"
    ]


def test_gauges_carry_no_sample_rate():
    """A sampled reading (rate 0.1) is still sent as plain gauges, with no `|@0.1`."""
    enc = StatsdEncoder(ident())
    msg = Outgoing("rd", ts=TS, src="system", metrics={"cpu": 3.5}, rate=0.1)
    assert enc.encode(msg, Seq(), 1432)[0] == [b"fleetbeat.pi-kitchen.system.cpu:3.5|g"]


def test_heartbeat_fields_are_gauges_under_heartbeat():
    """A heartbeat sends seq, up, interval, uptime, drop (and by reason), errors and metrics."""
    enc = StatsdEncoder(ident())
    seq = Seq()
    seq.n = 41
    msg = Outgoing(
        "hb",
        ts=TS,
        interval=10.0,
        drop=3,
        drop_by={"refused": 2, "buffer_full": 1},
        errors={"gps": {"timeout": 2, "parse": 1}},
        metrics={"cpu": 3.5, "temp": 48.25, "uptime": 9999.0},
    )
    payloads, too_large = enc.encode(msg, seq, 1432)
    base = "fleetbeat.pi-kitchen.heartbeat."
    assert too_large == 0 and seq.n == 42
    assert lines(payloads) == [
        f"{base}seq:41|g",
        f"{base}up:1|g",
        f"{base}interval:10.0|g",
        f"{base}uptime:10000.25|g",
        f"{base}drop:3|g",
        f"{base}drop_buffer_full:1|g",
        f"{base}drop_refused:2|g",
        f"{base}errors:3|g",
        f"{base}cpu:3.5|g",
        f"{base}temp:48.25|g",
    ]


def test_bye_sets_up_to_zero():
    """A bye sends the heartbeat seq and up = 0, so a graceful stop shows."""
    enc = StatsdEncoder(ident())
    payloads, _ = enc.encode(Outgoing("bye", ts=TS), Seq(), 1432)
    assert lines(payloads) == [
        "fleetbeat.pi-kitchen.heartbeat.seq:0|g",
        "fleetbeat.pi-kitchen.heartbeat.up:0|g",
    ]


def test_negative_gauge_is_zeroed_first_in_the_same_datagram():
    """A negative value is sent as `name:0|g` then `name:-v|g`, never split across datagrams."""
    enc = StatsdEncoder(ident())
    name = "fleetbeat.pi-kitchen.weather.temp"
    msg = Outgoing("rd", ts=TS, src="weather", metrics={"temp": -4.5, "hum": 40.0})
    payloads, _ = enc.encode(msg, Seq(), 1432)
    assert lines(payloads) == [
        f"{name}:0|g",
        f"{name}:-4.5|g",
        "fleetbeat.pi-kitchen.weather.hum:40.0|g",
    ]
    pair = len(f"{name}:0|g\n{name}:-4.5|g")
    payloads, _ = enc.encode(msg, Seq(), pair + 5)
    assert payloads[0] == f"{name}:0|g\n{name}:-4.5|g".encode()
    # etsy statsd: the gauge already holds 7; the pair still ends at -4.5
    gauges = {(name, ()): 7.0}
    apply_gauges(payloads, gauges)
    assert gauges[(name, ())] == -4.5


def test_negative_zero_is_sent_as_zero():
    """-0.0 is sent as `0` (a `-0` would be a no-op delta to StatsD)."""
    enc = StatsdEncoder(ident())
    msg = Outgoing("rd", ts=TS, src="s", metrics={"x": -0.0})
    assert enc.encode(msg, Seq(), 1432)[0] == [b"fleetbeat.pi-kitchen.s.x:0|g"]


@pytest.mark.parametrize(
    ("text", "dots", "expected"),
    [
        ("disk.root", True, "disk.root"),
        ("net..eth 0.rx.", True, "net.eth_0.rx"),
        (".", True, "_"),
        ("temp °C", True, "temp__C"),
        ("a:b|c@d#e/f", True, "a_b_c_d_e_f"),
        ("pi.kitchen", False, "pi_kitchen"),
        ("", False, "_"),
    ],
)
def test_statsd_name_sanitising_rule(text, dots, expected):
    """Characters outside A-Z a-z 0-9 _ - . become _, empty levels vanish, an empty part is _."""
    assert clean_name(text, dots=dots) == expected


def test_device_and_source_are_one_level_each():
    """Dots in the device id and the sensor name become `_`: each stays one Graphite level."""
    enc = StatsdEncoder(ident("pi.kitchen"))
    msg = Outgoing("rd", ts=TS, src="my.sensor", metrics={"a.b": 1})
    assert enc.encode(msg, Seq(), 1432)[0] == [b"fleetbeat.pi_kitchen.my_sensor.a.b:1|g"]


def test_dogstatsd_tags_carry_device_and_agent_tags():
    """DogStatsD lines name `{prefix}.{src}.{metric}` and tag device plus `[agent] tags`."""
    enc = DogStatsdEncoder(ident(site="the kitchen, 2", rack="2", device="ignored", empty=""))
    msg = Outgoing("rd", ts=TS, src="my-sensor", metrics={"temp-c": -1.5})
    payloads, _ = enc.encode(msg, Seq(), 1432)
    tags = "|#device:pi-kitchen,site:the_kitchen__2,rack:2"
    assert lines(payloads) == [
        f"fleetbeat.my_sensor.temp_c:0|g{tags}",
        f"fleetbeat.my_sensor.temp_c:-1.5|g{tags}",
    ]


def test_dogstatsd_heartbeat_under_prefix_heartbeat():
    """DogStatsD heartbeats are `{prefix}.heartbeat.*` gauges tagged with the device."""
    enc = DogStatsdEncoder(ident(), prefix="fleet")
    payloads, _ = enc.encode(Outgoing("bye", ts=TS), Seq(), 1432)
    assert lines(payloads) == [
        "fleet.heartbeat.seq:0|g|#device:pi-kitchen",
        "fleet.heartbeat.up:0|g|#device:pi-kitchen",
    ]


def test_lines_are_packed_and_split_only_at_line_boundaries():
    """Many metrics fill several datagrams, each within the limit, every line whole, in order."""
    enc = StatsdEncoder(ident())
    metrics = {f"metric_{i}": i + 0.5 for i in range(100)}
    seq = Seq()
    payloads, too_large = enc.encode(Outgoing("rd", ts=TS, src="s", metrics=metrics), seq, 300)
    assert too_large == 0 and len(payloads) > 5
    assert all(len(p) <= 300 for p in payloads)
    assert lines(payloads) == [
        f"fleetbeat.pi-kitchen.s.metric_{i}:{i + 0.5!r}|g" for i in range(100)
    ]
    assert seq.n == 1  # one seq per message, not per datagram


def test_a_line_over_the_limit_is_counted_not_cut():
    """A line longer than the limit is dropped and counted; the others are still sent."""
    enc = StatsdEncoder(ident())
    msg = Outgoing("rd", ts=TS, src="s", metrics={"x" * 300: 1, "ok": 2})
    payloads, too_large = enc.encode(msg, Seq(), 256)
    assert too_large == 1
    assert payloads == [b"fleetbeat.pi-kitchen.s.ok:2|g"]


def test_nothing_fits_means_no_seq_drawn():
    """When every line is too large nothing is sent and no seq is used up."""
    enc = DogStatsdEncoder(ident(site="x" * 400))
    seq = Seq()
    payloads, too_large = enc.encode(
        Outgoing("rd", ts=TS, src="s", metrics={"a": 1, "b": 2}), seq, 256
    )
    assert (payloads, too_large, seq.n) == ([], 2, 0)
    payloads, too_large = enc.encode(Outgoing("bye", ts=TS), seq, 256)
    assert (payloads, too_large, seq.n) == ([], 2, 0)


# --- properties -----------------------------------------------------------------------

NAME_TEXT = st.text(max_size=40)
VALUES = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
)
STATSD_NAME = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")
DATADOG_NAME = re.compile(r"[A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)*")


@settings(max_examples=300, deadline=None)
@given(
    src=st.text(min_size=1, max_size=20),
    metrics=st.dictionaries(NAME_TEXT, VALUES, min_size=1, max_size=30),
    limit=st.integers(min_value=256, max_value=1432),
)
def test_any_metric_reads_back_through_statsd_semantics(src, metrics, limit):
    """Any name and finite value become valid gauge lines that a StatsD server reads back."""
    enc = StatsdEncoder(ident("dev-1"))
    payloads, too_large = enc.encode(Outgoing("rd", ts=TS, src=src, metrics=metrics), Seq(), limit)
    assert too_large == 0 and all(len(p) <= limit for p in payloads)
    gauges: dict[tuple[str, tuple[str, ...]], float] = {}
    apply_gauges(payloads, gauges)
    expected: dict[tuple[str, tuple[str, ...]], float] = {}
    for metric, value in metrics.items():
        name = f"fleetbeat.dev-1.{clean_name(src, dots=False)}.{clean_name(metric)}"
        expected[(name, ())] = float(value)  # names may meet: the last one wins, in order
    assert gauges == expected
    for name, _ in gauges:
        assert STATSD_NAME.fullmatch(name), name


@settings(max_examples=200, deadline=None)
@given(
    metrics=st.dictionaries(NAME_TEXT, VALUES, min_size=1, max_size=10),
    tags=st.dictionaries(
        st.from_regex(r"[A-Za-z_][A-Za-z0-9_.-]{0,20}", fullmatch=True),
        st.text(max_size=30),
        max_size=4,
    ),
)
def test_any_tag_makes_valid_dogstatsd_lines(metrics, tags):
    """Any accepted tag value yields lines whose tags parse as key:value, device first."""
    enc = DogStatsdEncoder(ident("dev-1", **tags))
    payloads, too_large = enc.encode(Outgoing("rd", ts=TS, src="s", metrics=metrics), Seq(), 65507)
    assert too_large == 0
    wanted = [f"{k}:{v}" for k, v in tags.items() if k != "device" and v]
    for line in lines(payloads):
        name, _, kind, got_tags = parse_statsd_line(line)
        assert kind == "g" and DATADOG_NAME.fullmatch(name)
        assert got_tags[0] == "device:dev-1"
        assert len(got_tags) == 1 + len(wanted)
        for tag, want in zip(got_tags[1:], wanted):
            assert re.fullmatch(r"[\w:./-]+", tag)
            assert tag.split(":", 1)[0] == want.split(":", 1)[0]


def test_parser_refuses_a_sample_rate():
    """The test parser rejects `|@rate` on a gauge, so the checks above can fail."""
    with pytest.raises(LineError):
        parse_statsd_line("a.b:1|g|@0.1")
