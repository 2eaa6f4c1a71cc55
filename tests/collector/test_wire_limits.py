"""Validation at the door: every field to its type and range, with a named reason."""

from __future__ import annotations

import json
import tempfile
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleetbeat import wire
from fleetbeat.collector.config import CollectorSection
from fleetbeat.collector.fleet import Fleet

VALID: dict[str, Any] = {
    "v": 1, "k": "hb", "dev": "pi-1", "run": "9f1c2a7b3d4e5f60", "seq": 42,
    "ts": 1764160000.123, "int": 10, "bt": 1764150000, "ver": "0.1.0", "drop": 0,
    "tags": {"site": "kitchen"}, "m": {"cpu": 3.5, "mem": 41.2},
}  # fmt: skip
PARSERS = ["json", "orjson"] if wire.json_parser() == "orjson" else ["json"]


def nested(depth: int) -> Any:
    x: Any = 1
    for _ in range(depth):
        x = [x]
    return x


def verdict(data: bytes, parser: str) -> str:
    """ "ok" or the rejection reason of parse_fields with one JSON parser forced."""
    saved = wire._fast_loads
    wire._fast_loads = wire._std_loads if parser == "json" else None
    try:
        assert wire.json_parser() == parser
        wire.parse_fields(data)
        return "ok"
    except wire.WireError as err:
        return err.reason
    finally:
        wire._fast_loads = saved


HOSTILE = [
    ({"ts": 10**400}, "bad_field"),
    ({"ts": 2**63}, "bad_field"),
    ({"ts": -1}, "bad_field"),
    ({"ts": 4102444801}, "bad_field"),
    ({"bt": 2**63}, "bad_field"),
    ({"bt": 1e300}, "bad_field"),
    ({"drop": 2**63}, "bad_field"),
    ({"drop": -1}, "bad_field"),
    ({"drop": 1.5}, "bad_field"),
    ({"int": 2**63}, "bad_field"),
    ({"int": 1e308}, "bad_field"),
    ({"int": 86400.5}, "bad_field"),
    ({"int": 0.009}, "bad_field"),
    ({"m": {"x": 10**400}}, "bad_field"),
    ({"m": {"x" * 129: 1.0}}, "bad_field"),
    ({"ver": "\ud800"}, "bad_text"),
    ({"tags": {"site": "\udfff"}}, "bad_text"),
    ({"m": {"\ud800": 1.0}}, "bad_text"),
    ({"ver": "v" * 129}, "bad_field"),
    ({"tags": {"k" * 129: "v"}}, "bad_field"),
    ({"tags": {"k": "v" * 129}}, "bad_field"),
    ({"x": nested(16)}, "too_deep"),
    ({"x": nested(900)}, "too_deep"),
]


@pytest.mark.parametrize("parser", PARSERS)
@pytest.mark.parametrize(("fields", "reason"), HOSTILE)
def test_hostile_fields_are_rejected_by_name(
    fields: dict[str, Any], reason: str, parser: str
) -> None:
    """Out-of-range numbers, lone surrogates, long strings and deep nesting get a reason."""
    data = json.dumps({**VALID, **fields}).encode()
    assert verdict(data, parser) == reason


@pytest.mark.parametrize("parser", PARSERS)
def test_deep_raw_nesting_is_too_deep_not_a_recursion_error(parser: str) -> None:
    """60 KB of brackets is rejected as too_deep by either parser, never a RecursionError."""
    data = b'{"v":1,"x":' + b"[" * 30000 + b"]" * 30000 + b"}"
    assert verdict(data, parser) == "too_deep"


@pytest.mark.parametrize("parser", PARSERS)
@pytest.mark.parametrize("fields", [
    {"ver": "\ud83d\ude00"},  # a surrogate pair is a real character
    {"m": {"x": 2**64 - 1, "y": -(2**63), "z": 2**65}},  # wider ints are read as floats
    {"int": 0.01, "ts": 0, "bt": 4102444800},
    {"x": nested(14)},
])  # fmt: skip
def test_extremes_inside_the_ranges_pass(fields: dict[str, Any], parser: str) -> None:
    """Values at the edges of the documented ranges are accepted by both parsers."""
    assert verdict(json.dumps({**VALID, **fields}).encode(), parser) == "ok"


def test_rejections_are_counted_and_leave_no_trace() -> None:
    """Each crash datagram from the issue is counted by reason and changes no device."""
    fleet = Fleet(CollectorSection())
    fleet.receive(wire.dumps(VALID), ("127.0.0.1", 1))
    before = fleet.device("pi-1")
    for fields, _ in HOSTILE:
        fleet.receive(json.dumps({**VALID, "seq": 43, **fields}).encode(), ("127.0.0.1", 1))
    s = fleet.stats()
    assert sum(s["rejected"].values()) == len(HOSTILE)
    assert fleet.device("pi-1") == before


EXTREMES = st.one_of(
    st.sampled_from([2**63, 2**64, -(2**63) - 1, 10**400, 1e308, -1e308, 0, -1, 0.0, 1e-320,
                     86400, 86400.0001, 0.01, 0.0099, 4102444800, 4102444801, True, None]),
    st.integers(), st.floats(),
    st.text(max_size=140), st.sampled_from(["\ud800", "\udfff", "x" * 129, "\U0001f600" * 128]),
    st.builds(nested, st.integers(1, 40)),
    st.dictionaries(st.text(max_size=130), st.integers() | st.floats() | st.text(max_size=130),
                    max_size=20),
)  # fmt: skip
FIELDS = [*sorted(VALID), "src", "rate", "drop_by", "err"]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["hb", "rd", "bye"]),
       st.lists(st.tuples(st.sampled_from(FIELDS), EXTREMES), min_size=1, max_size=4))  # fmt: skip
def test_extreme_fields_are_rejected_and_counted_or_accepted_and_restorable(
    kind: str, fields: list[tuple[str, Any]]
) -> None:
    """Any field of any kind at an extreme: counted as rejected, or stored and reloaded intact."""
    from fleetbeat.collector.store import Store

    fleet = Fleet(CollectorSection(), clock=lambda: 1_800_000_000.0, monotonic=lambda: 5.0)
    for seq in (40, 41):  # a confirmed device: it is stored
        fleet.receive(wire.dumps({**VALID, "seq": seq}), ("127.0.0.1", 1))
    msg: dict[str, Any] = {**VALID, "k": kind, "src": "s"}
    for key, value in fields:
        msg[key] = value
    try:
        data = json.dumps(msg).encode()
    except (ValueError, RecursionError):
        return
    fleet.receive(data, ("127.0.0.1", 1))
    s = fleet.stats()
    assert s["received"]["udp"] == 3
    assert sum(s["rejected"].values()) + s["accepted"]["udp"] == 3
    rows, events = fleet.take_changes()
    with tempfile.TemporaryDirectory() as state:
        store = Store(state, retention=86400.0)
        try:
            store.write(rows, events)
            stored_rows, stored_events = store.load(1_800_000_000.0)
        finally:
            store.close()
    again = Fleet(CollectorSection(), clock=lambda: 1_800_000_000.0, monotonic=lambda: 5.0)
    confirmed = [d for d in fleet.devices() if d["confirmed"]]  # only those are stored
    assert again.restore(stored_rows, stored_events) == len(confirmed)
    assert again.rows_skipped == 0
    assert again.devices() == confirmed
    json.dumps(again.devices(), allow_nan=False)
    json.dumps(again.stats(), allow_nan=False)
