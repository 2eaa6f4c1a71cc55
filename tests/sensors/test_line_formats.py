"""Line parsers: valid lines give readings, invalid ones a counted reason, never garbage."""

from __future__ import annotations

import math
from functools import reduce

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetbeat.sensors.line_formats import (
    KNOTS_TO_MS,
    CsvParser,
    LineError,
    NmeaParser,
    RegexParser,
    make_parser,
    parse_json,
    parse_kv,
    to_number,
)


def nmea(body: str, *, corrupt: bool = False) -> str:
    """A sentence with its checksum computed here (or deliberately wrong)."""
    checksum = reduce(lambda acc, ch: acc ^ ord(ch), body, 0)
    if corrupt:
        checksum ^= 0x5A
    return f"${body}*{checksum:02X}"


GGA = "GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,"
GGA_SOUTH_WEST = "GNGGA,010203.00,3352.1234,S,15112.5000,W,2,12,1.20,-10.5,M,,M,,"
GGA_NO_FIX = "GPGGA,123520,,,,,0,00,,,M,,M,,"
RMC = "GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W"
RMC_VOID = "GPRMC,123519,V,,,,,,,230394,,"


# --- numbers -----------------------------------------------------------------------


@pytest.mark.parametrize("text", ["nan", "inf", "-Infinity", "", "abc", "1,5", "0x10"])
def test_to_number_refuses_non_finite_and_words(text):
    """NaN, infinities, empty text and words are not numbers."""
    assert to_number(text) is None


def test_to_number_reads_plain_numbers():
    """Integers, decimals, signs and exponents are read as floats."""
    assert [to_number(t) for t in ("21", "-3.5", "+1e3", " 7 ")] == [21.0, -3.5, 1000.0, 7.0]


# --- kv ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    ["temp=21.5 hum=40", "temp:21.5,hum:40", "temp=21.5;hum=40\r", "  temp=21.5\thum=40  "],
)
def test_kv_valid_lines(line):
    """Both `k=v` and `k:v` pairs, separated by space, tab, comma or semicolon, are read."""
    assert parse_kv(line) == ({"temp": 21.5, "hum": 40.0}, [])


def test_kv_mixed_garbage_keeps_the_good_pairs_and_counts_the_rest():
    """Non-numeric values and tokens that are not pairs are skipped with their reason."""
    metrics, skipped = parse_kv("temp=21.5 hum=wet @@#! pressure=1013 volts=nan =3")
    assert metrics == {"temp": 21.5, "pressure": 1013.0}
    assert sorted(skipped) == ["bad_field", "bad_field", "not_numeric", "not_numeric"]


@pytest.mark.parametrize("line", ["hello world", "\x00\x01\x02", "=== BOOT ==="])
def test_kv_invalid_line_is_an_error(line):
    """A line without a single key=value pair is refused as bad_line."""
    with pytest.raises(LineError) as err:
        parse_kv(line)
    assert err.value.reason == "bad_line"


def test_kv_only_non_numeric_values_gives_an_empty_reading():
    """A line whose values are all words gives no metric and one count per value."""
    assert parse_kv("state=ok mode=auto") == ({}, ["not_numeric", "not_numeric"])


# --- csv ---------------------------------------------------------------------------


def test_csv_valid_line_names_cells_and_skips_unnamed_columns():
    """Cells map to `fields` in order; an empty field name drops that column."""
    parse = CsvParser(["temp", "", "hum"])
    assert parse("21.5,ignored,40\r\n") == ({"temp": 21.5, "hum": 40.0}, [])


def test_csv_other_delimiter():
    """The delimiter is configurable."""
    assert CsvParser(["a", "b"], delimiter=";")("1;2") == ({"a": 1.0, "b": 2.0}, [])


@pytest.mark.parametrize("line", ["21.5", "21.5,40,7", "21.5;40", ""])
def test_csv_wrong_cell_count_is_refused(line):
    """A line with more or fewer cells than fields (a cut line, say) gives nothing."""
    with pytest.raises(LineError) as err:
        CsvParser(["temp", "hum"])(line)
    assert err.value.reason == "wrong_field_count"


def test_csv_mixed_garbage_cells_are_counted():
    """A cell that is not a number is skipped and counted; its neighbours are kept."""
    assert CsvParser(["temp", "hum"])("21.5,\x7f?") == ({"temp": 21.5}, ["not_numeric"])


def test_csv_header_is_skipped_only_when_asked():
    """With skip_header a line of words is a header (not an error); without it, garbage."""
    with pytest.raises(LineError) as err:
        CsvParser(["temp", "hum"], skip_header=True)("temp,hum")
    assert err.value.reason == "header"
    assert CsvParser(["temp", "hum"])("temp,hum") == ({}, ["not_numeric", "not_numeric"])
    with pytest.raises(LineError) as err:
        CsvParser(["temp", "hum"], skip_header=True)("time,temp,hum")
    assert err.value.reason == "header"


# --- json --------------------------------------------------------------------------


def test_json_flattens_nested_objects_and_reads_bools():
    """Nested keys are joined with dots; true/false become 1/0; numeric strings are read."""
    line = '{"temp": 21.5, "env": {"hum": 40, "air": {"co2": 412}}, "ok": true, "v": "3.3"}'
    metrics, skipped = parse_json(line)
    assert metrics == {"temp": 21.5, "env.hum": 40, "env.air.co2": 412, "ok": 1, "v": 3.3}
    assert skipped == []


def test_json_mixed_garbage_values_are_counted():
    """Strings, nulls, lists and huge numbers are skipped with not_numeric."""
    metrics, skipped = parse_json('{"temp": 1, "name": "x", "n": null, "l": [1, 2], "big": 1e999}')
    assert metrics == {"temp": 1}
    assert skipped == ["not_numeric"] * 4


@pytest.mark.parametrize("line", ['{"temp": 21.5', "[1, 2]", "21.5", "temp=1", '{"a":1}{"b":2}'])
def test_json_invalid_lines_are_refused(line):
    """Anything but one complete JSON object is bad_json."""
    with pytest.raises(LineError) as err:
        parse_json(line)
    assert err.value.reason == "bad_json"


# --- nmea --------------------------------------------------------------------------


def test_nmea_gga_gives_position_fix_and_quality():
    """GGA gives signed decimal degrees, altitude, fix quality, satellites and HDOP."""
    metrics, skipped = NmeaParser()(nmea(GGA))
    assert skipped == []
    assert metrics["lat"] == pytest.approx(48 + 7.038 / 60)
    assert metrics["lon"] == pytest.approx(11 + 31.0 / 60)
    assert (metrics["alt"], metrics["fix"], metrics["sats"], metrics["hdop"]) == (
        545.4,
        1,
        8,
        0.9,
    )


def test_nmea_south_and_west_are_negative():
    """Southern latitudes and western longitudes are negative (any talker, here GN)."""
    metrics, _ = NmeaParser()(nmea(GGA_SOUTH_WEST))
    assert metrics["lat"] == pytest.approx(-(33 + 52.1234 / 60))
    assert metrics["lon"] == pytest.approx(-(151 + 12.5 / 60))
    assert metrics["alt"] == -10.5


def test_nmea_gga_without_fix_sends_no_position():
    """Without a fix, GGA reports fix 0 and satellites, never a made-up 0,0 position."""
    assert NmeaParser()(nmea(GGA_NO_FIX)) == ({"fix": 0, "sats": 0}, [])


def test_nmea_rmc_gives_speed_in_m_per_s_course_and_validity():
    """RMC speed is converted from knots to m/s; status A is fix_valid 1."""
    metrics, _ = NmeaParser()(nmea(RMC))
    assert metrics["fix_valid"] == 1
    assert metrics["speed"] == pytest.approx(22.4 * KNOTS_TO_MS, abs=1e-3)
    assert metrics["course"] == 84.4
    assert NmeaParser()(nmea(RMC_VOID)) == ({"fix_valid": 0}, [])


@pytest.mark.parametrize("body", [GGA, RMC])
def test_nmea_bad_checksum_is_refused(body):
    """A sentence whose checksum does not match is counted as bad_checksum."""
    with pytest.raises(LineError) as err:
        NmeaParser()(nmea(body, corrupt=True))
    assert err.value.reason == "bad_checksum"


def test_nmea_missing_checksum_is_refused():
    """A sentence without a checksum cannot be trusted: bad_checksum."""
    with pytest.raises(LineError) as err:
        NmeaParser()("$" + GGA)
    assert err.value.reason == "bad_checksum"


def test_nmea_other_sentence_types_are_ignored_quietly():
    """Valid sentences of other types (GSV, VTG) give nothing and no error."""
    gsv = nmea("GPGSV,3,1,11,03,03,111,00,04,15,270,00,06,01,010,00,13,06,292,00")
    assert NmeaParser()(gsv) == ({}, [])


@pytest.mark.parametrize(
    "line",
    ["garbage \x01\x02", "$GPGGA", "4807.038,N,01131.000,E*", nmea("GPGGA,1,4807,X,011,E,1,08")],
)
def test_nmea_garbage_is_bad_nmea(line):
    """Fragments and nonsense are refused as bad_nmea, not sent."""
    with pytest.raises(LineError) as err:
        NmeaParser()(line)
    assert err.value.reason == "bad_nmea"


# --- regex -------------------------------------------------------------------------


def test_regex_named_groups_are_metrics():
    """Each named group is a metric; unmatched optional groups are left out silently."""
    parse = RegexParser(r"T=(?P<temp>-?[\d.]+)C(?: H=(?P<hum>[\d.]+)%)?")
    assert parse("sensor 3: T=-4.5C H=40%") == ({"temp": -4.5, "hum": 40.0}, [])
    assert parse("T=21C") == ({"temp": 21.0}, [])


def test_regex_no_match_and_non_numeric_groups():
    """A line the pattern does not match is no_match; a non-numeric group is counted."""
    parse = RegexParser(r"T=(?P<temp>\S+)")
    with pytest.raises(LineError) as err:
        parse("\x00\x00 noise")
    assert err.value.reason == "no_match"
    assert parse("T=hot") == ({}, ["not_numeric"])


def test_regex_without_named_groups_is_rejected():
    """A pattern with no named group could never give a metric."""
    with pytest.raises(ValueError):
        RegexParser(r"T=([\d.]+)")


def test_make_parser_knows_every_format():
    """Every format name builds a working parser; unknown names are refused."""
    assert make_parser("kv")("a=1") == ({"a": 1.0}, [])
    assert make_parser("csv", fields=["a"])("1") == ({"a": 1.0}, [])
    assert make_parser("json")('{"a":1}') == ({"a": 1}, [])
    assert make_parser("nmea")(nmea(RMC_VOID)) == ({"fix_valid": 0}, [])
    assert make_parser("regex", pattern=r"(?P<a>\d)")("x1") == ({"a": 1.0}, [])
    with pytest.raises(ValueError):
        make_parser("xml")


def test_parsers_never_emit_non_finite_values():
    """Whatever the input, every value a parser returns is a finite number."""
    lines = ["a=1e309 b=-1e309 c=nan", '{"a": 1e400, "b": -1e400}', "1e999,2"]
    for parse, line in zip([parse_kv, parse_json, CsvParser(["a", "b"])], lines):
        metrics, _ = parse(line)
        assert all(math.isfinite(v) for v in metrics.values())


def test_json_names_that_are_not_metric_names_are_skipped():
    """Keys with spaces or control characters are counted as bad_field, not sent."""
    metrics, skipped = parse_json('{"temp": 1, "a b": 2, "\\u0000x": 3, "env": {"": 4}}')
    assert metrics == {"temp": 1}
    assert skipped == ["bad_field"] * 3


def test_regex_group_names_must_be_metric_names():
    """A named group that is not a valid metric name is refused when the parser is built."""
    with pytest.raises(ValueError, match="not a metric name"):
        RegexParser(r"(?P<température>\d+)")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_any_text_gives_finite_numbers_or_a_line_error(text):
    """Whatever text arrives, every parser returns finite numbers or raises LineError."""
    parsers = [
        parse_kv,
        parse_json,
        CsvParser(["a", "b"], skip_header=True),
        NmeaParser(),
        RegexParser(r"(?P<a>\S+)=(?P<b>\S*)"),
    ]
    for parse in parsers:
        try:
            metrics, _ = parse(text)
        except LineError:
            continue
        assert all(type(v) in (int, float) and math.isfinite(v) for v in metrics.values())
