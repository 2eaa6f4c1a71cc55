"""InfluxDB line protocol encoder: escaping, types, timestamps, heartbeats, splitting."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from line_parsers import LineError, influx_points, parse_influx_line

from fleetbeat.outputs.base import Identity, Outgoing
from fleetbeat.outputs.influx_lines import InfluxEncoder
from fleetbeat.outputs.lines import pack_lines
from helpers import Seq

TS = 1764160000.1234
TS_NS = 1764160000123000000
BOOT = 1764150000


def ident(dev: str = "pi-kitchen", boot_time: int = BOOT, **tags: str) -> Identity:
    return Identity(
        dev=dev, run="9f1c2a7b3d4e5f60", boot_time=boot_time, version="0.1.0", tags=tags
    )


def test_reading_is_one_line_measurement_source_tags_sorted():
    """A reading is `{src},device=..,tags.. fields ts` with tags sorted by key."""
    enc = InfluxEncoder(ident(site="kitchen", rack="2"))
    msg = Outgoing("rd", ts=TS, src="system", metrics={"cpu": 3.5, "procs": 173, "load1": 0.5})
    payloads, too_large = enc.encode(msg, Seq(), 1432)
    assert too_large == 0
    assert payloads == [
        b"system,device=pi-kitchen,rack=2,site=kitchen cpu=3.5,procs=173i,load1=0.5 %d" % TS_NS
    ]


def test_escaping_follows_the_line_protocol_reference():
    """Measurement escapes comma and space; keys and tag values also escape `=`; `\\` doubles."""
    enc = InfluxEncoder(ident(**{"my tag": "a,b=c d", "path": "C:\\temp"}))
    msg = Outgoing("rd", ts=TS, src="my sensor,1=x", metrics={"temp °C,max=1": 1.5})
    payloads, _ = enc.encode(msg, Seq(), 1432)
    assert payloads == [
        b"my\\ sensor\\,1=x,device=pi-kitchen,my\\ tag=a\\,b\\=c\\ d,path=C:\\\\temp "
        + "temp\\ °C\\,max\\=1=1.5 ".encode()
        + b"%d" % TS_NS
    ]
    ((measurement, tags, fields, _),) = influx_points(payloads)
    assert measurement == "my sensor,1=x"
    assert dict(tags) == {"device": "pi-kitchen", "my tag": "a,b=c d", "path": "C:\\temp"}
    assert fields == {"temp °C,max=1": 1.5}


def test_newlines_become_spaces_and_empty_tags_are_left_out():
    """Line protocol cannot carry a newline: it becomes a space; a tag with no value is omitted."""
    enc = InfluxEncoder(ident(note="two\nlines", empty="", device="not me"))
    msg = Outgoing("rd", ts=TS, src="#s", metrics={"a\r\nb": 1, "": 2})
    ((measurement, tags, fields, _),) = influx_points(enc.encode(msg, Seq(), 1432)[0])
    assert measurement == "_s"
    assert dict(tags) == {"device": "pi-kitchen", "note": "two lines"}
    assert fields == {"a  b": 1, "_": 2}


def test_a_double_quote_in_a_field_key_is_written_as_underscore():
    """A `"` in a field key becomes `_`; in measurements and tags it is kept as it is."""
    enc = InfluxEncoder(ident(q='say "hi"'))
    msg = Outgoing("rd", ts=TS, src='a"b', metrics={'temp "c"': 1})
    payloads, _ = enc.encode(msg, Seq(), 1432)
    assert payloads == [b'a"b,device=pi-kitchen,q=say\\ "hi" temp\\ _c_=1i %d' % TS_NS]


def test_names_that_escape_alike_keep_the_last_value():
    """Two metric names written alike give one field, not a duplicate key InfluxDB refuses."""
    enc = InfluxEncoder(ident())
    payloads, too_large = enc.encode(
        Outgoing("rd", ts=TS, src="s", metrics={'a"': 1, "a_": 2, "b": 3}), Seq(), 1432
    )
    assert too_large == 0
    assert payloads == [b"s,device=pi-kitchen a_=2i,b=3i %d" % TS_NS]


def test_integers_have_the_i_suffix_and_floats_do_not():
    """Ints (and bools as 0/1) are `i` integers, floats keep a float form, huge ints are floats."""
    enc = InfluxEncoder(ident())
    metrics = {"i": 7, "f": 7.0, "neg": -3, "tiny": 1e-07, "big": 2**63, "max": 2**63 - 1}
    payloads, _ = enc.encode(Outgoing("rd", ts=TS, src="s", metrics=metrics), Seq(), 1432)
    line = payloads[0].decode()
    assert (
        "i=7i,f=7.0,neg=-3i,tiny=1e-07,big=9.223372036854776e+18,max=9223372036854775807i" in line
    )
    ((_, _, fields, _),) = influx_points(payloads)
    assert type(fields["i"]) is int and type(fields["f"]) is float


def test_an_int_no_float_can_hold_is_counted_as_dropped():
    """An int beyond float range cannot be written: it is left out and counted."""
    enc = InfluxEncoder(ident())
    payloads, too_large = enc.encode(
        Outgoing("rd", ts=TS, src="s", metrics={"huge": 10**400, "ok": 1}), Seq(), 1432
    )
    assert too_large == 1
    assert influx_points(payloads)[0][2] == {"ok": 1}


def test_timestamp_is_nanoseconds_with_millisecond_resolution():
    """The timestamp is epoch nanoseconds, rounded to the millisecond."""
    enc = InfluxEncoder(ident())
    payloads, _ = enc.encode(
        Outgoing("rd", ts=1764160000.9996, src="s", metrics={"x": 1}), Seq(), 1432
    )
    assert influx_points(payloads)[0][3] == 1764160001000000000


def test_heartbeat_fields_under_prefix_heartbeat():
    """A heartbeat is a `{prefix}_heartbeat` point: seq, up, interval, uptime, drops, errors."""
    enc = InfluxEncoder(ident(site="k"), prefix="fleet")
    seq = Seq()
    seq.n = 9
    msg = Outgoing(
        "hb",
        ts=TS,
        interval=10.0,
        drop=2,
        drop_by={"refused": 2},
        errors={"gps": {"timeout": 4}},
        metrics={"cpu": 3.5, "seq": 99},
    )
    payloads, too_large = enc.encode(msg, seq, 1432)
    assert too_large == 0 and seq.n == 10
    assert payloads == [
        b"fleet_heartbeat,device=pi-kitchen,site=k seq=9i,up=1i,interval=10.0,"
        b"uptime=10000.123,drop=2i,drop_refused=2i,errors=4i,cpu=3.5 %d" % TS_NS
    ]


def test_bye_is_a_heartbeat_point_with_up_zero():
    """A bye is a `fleetbeat_heartbeat` point with the seq and up=0i."""
    enc = InfluxEncoder(ident(boot_time=0))
    payloads, _ = enc.encode(Outgoing("bye", ts=TS), Seq(), 1432)
    assert payloads == [b"fleetbeat_heartbeat,device=pi-kitchen seq=0i,up=0i %d" % TS_NS]


def test_uptime_is_left_out_when_boot_time_is_unknown():
    """With no boot time (0) the heartbeat has no uptime field."""
    enc = InfluxEncoder(ident(boot_time=0))
    payloads, _ = enc.encode(Outgoing("hb", ts=TS, interval=1.0), Seq(), 1432)
    assert "uptime" not in influx_points(payloads)[0][2]


def test_a_long_reading_is_split_into_lines_of_the_same_point():
    """A reading too long for one datagram becomes several lines, same series and timestamp."""
    enc = InfluxEncoder(ident(site="kitchen"))
    metrics = {f"metric_number_{i}": i + 0.5 for i in range(60)}
    seq = Seq()
    payloads, too_large = enc.encode(Outgoing("rd", ts=TS, src="system", metrics=metrics), seq, 300)
    assert too_large == 0 and len(payloads) > 3 and seq.n == 1
    assert all(len(p) <= 300 for p in payloads)
    points = influx_points(payloads)
    assert {(m, t, ts) for m, t, _, ts in points} == {
        ("system", (("device", "pi-kitchen"), ("site", "kitchen")), TS_NS)
    }
    merged: dict[str, float] = {}
    for _, _, fields, _ in points:
        merged.update(fields)
    assert list(merged.items()) == list(metrics.items())


def test_a_field_too_large_for_any_line_is_counted():
    """A field that cannot fit a line of its own is dropped and counted; the rest is sent."""
    enc = InfluxEncoder(ident())
    payloads, too_large = enc.encode(
        Outgoing("rd", ts=TS, src="s", metrics={"x" * 300: 1, "ok": 2}), Seq(), 256
    )
    assert too_large == 1
    assert influx_points(payloads)[0][2] == {"ok": 2}


def test_nothing_fits_means_no_seq_drawn():
    """When tags alone exceed the limit nothing is sent and no seq is used up."""
    enc = InfluxEncoder(ident(site="x" * 300))
    seq = Seq()
    assert enc.encode(Outgoing("hb", ts=TS, interval=1.0), seq, 256)[0] == []
    assert seq.n == 0


@pytest.mark.parametrize(
    "line",
    [
        "m,t=a b f=1 1",  # unescaped space in a tag value
        "m,t=a=b f=1 1",  # unescaped equals sign in a tag value
        "m f=1",  # no timestamp
        "m,b=1,a=2 f=1 1",  # tags not sorted
        "m f=inf 1",
    ],
)
def test_parser_rejects_malformed_lines(line):
    """The test parser is strict, so the round-trip checks can fail."""
    with pytest.raises(LineError):
        parse_influx_line(line)


# --- properties -----------------------------------------------------------------------

NO_NEWLINE = st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",))
NAME = st.text(NO_NEWLINE, min_size=1, max_size=30).map(
    lambda s: s[:-1] + '"' if s[0] == "q" else s
)
TAG_KEY = st.from_regex(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}", fullmatch=True)
VALUES = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
)
DEVICE = st.from_regex(r"[A-Za-z0-9._-]{1,64}", fullmatch=True)


@settings(max_examples=300, deadline=None)
@given(
    dev=DEVICE,
    src=NAME.filter(lambda s: not s.startswith("#")),
    tags=st.dictionaries(TAG_KEY, st.text(NO_NEWLINE, max_size=30), max_size=5),
    metrics=st.dictionaries(NAME, VALUES, min_size=1, max_size=30),
    limit=st.integers(min_value=512, max_value=1432),
)
def test_any_accepted_name_tag_and_value_reads_back_unchanged(dev, src, tags, metrics, limit):
    """Every name, tag and finite value the config accepts parses back exactly, within the limit."""
    enc = InfluxEncoder(ident(dev, **tags))
    payloads, too_large = enc.encode(Outgoing("rd", ts=TS, src=src, metrics=metrics), Seq(), limit)
    assert all(len(p) <= limit for p in payloads)
    want_tags = {k: v for k, v in tags.items() if v and k != "device"}
    want_tags["device"] = dev
    merged: dict[str, float] = {}
    for measurement, got_tags, fields, ts in influx_points(payloads):
        assert (measurement, dict(got_tags), ts) == (src, want_tags, TS_NS)
        merged.update(fields)
    # a field can only be lost when it alone would overflow a line, and then it is counted
    sent = {}
    for name, value in metrics.items():
        # documented: a quote in a field key is written _; names that meet keep the last value
        sent[name.replace('"', "_")] = value
    assert len(merged) + too_large == len(sent)
    for name, value in merged.items():
        assert value == sent[name] and type(value) is type(sent[name])


@settings(max_examples=300, deadline=None)
@given(
    units=st.lists(st.binary(min_size=1, max_size=80).map(lambda b: b.replace(b"\n", b"_"))),
    limit=st.integers(min_value=1, max_value=200),
)
def test_packing_keeps_every_line_whole_and_in_order(units, limit):
    """Packed datagrams stay within the limit and hold every line that fits, whole and in order."""
    payloads, too_large = pack_lines(units, limit)
    assert all(0 < len(p) <= limit for p in payloads)
    kept = [u for u in units if len(u) <= limit]
    assert [line for p in payloads for line in p.split(b"\n")] == kept
    assert too_large == len(units) - len(kept)
    # greedy: a datagram closes only when the next line would not fit
    for first, second in zip(payloads, payloads[1:]):
        assert len(first) + 1 + len(second.split(b"\n")[0]) > limit
