"""Bad input never stops the collector: it is rejected, counted by reason, and forgotten."""

from __future__ import annotations

import gc
import json
import tracemalloc
from typing import Any

import pytest
from collector_helpers import Sender
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleetbeat import wire
from fleetbeat.collector.config import CollectorSection
from fleetbeat.collector.fleet import Fleet
from fleetbeat.collector.receivers import start_receivers
from fleetbeat.config import frozen as dataclasses
from helpers import free_port, wait_until

VALID = {"v": 1, "k": "hb", "dev": "pi-1", "run": "9f1c2a7b3d4e5f60", "seq": 42,
         "ts": 1764160000.123, "int": 10, "bt": 1764150000, "ver": "0.1.0", "drop": 0,
         "tags": {"site": "kitchen"}, "m": {"cpu": 3.5, "mem": 41.2}}  # fmt: skip

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=80),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=12,
)  # fmt: skip


def accounted(fleet: Fleet) -> None:
    """Every payload received was either accepted or rejected with a reason."""
    s = fleet.stats()
    received = sum(s["received"].values())
    assert received == sum(s["accepted"].values()) + sum(s["rejected"].values())


def judged(fleet: Fleet) -> None:
    fleet.check(fleet.started_at + 1e6)  # liveness and snapshots must cope with what was let in
    for dev in fleet.devices():
        json.dumps(dev, allow_nan=False)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=300), max_size=20))
def test_random_bytes_never_crash(payloads: list[bytes]) -> None:
    """Random bytes are rejected and counted; nothing raises."""
    fleet = Fleet(CollectorSection())
    for p in payloads:
        fleet.receive(p, ("127.0.0.1", 1))
    accounted(fleet)
    assert fleet.stats()["received"]["udp"] == len(payloads)
    judged(fleet)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from([*sorted(VALID), "src", "rate", "k2"]),
                          json_values | st.just(None)), min_size=1, max_size=6),
       st.sampled_from(["hb", "rd", "bye"]))  # fmt: skip
def test_mutated_messages_never_crash(mutations: list[tuple[str, Any]], kind: str) -> None:
    """Valid messages with fields replaced, removed or added never raise."""
    fleet = Fleet(CollectorSection())
    fleet.receive(wire.dumps(VALID), ("127.0.0.1", 1))
    msg = {**VALID, "k": kind}
    for key, value in mutations:
        if value is None:
            msg.pop(key, None)
        else:
            msg[key] = value
        fleet.receive(json.dumps(msg).encode(), ("127.0.0.1", 1))
    accounted(fleet)
    judged(fleet)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), min_size=1, max_size=8))
def test_flipped_bytes_never_crash(flips: list[tuple[int, int]]) -> None:
    """Valid datagrams with bytes overwritten at random never raise."""
    fleet = Fleet(CollectorSection())
    data = bytearray(wire.dumps(VALID))
    for pos, byte in flips:
        data[pos % len(data)] = byte
        fleet.receive(bytes(data), ("127.0.0.1", 1))
    accounted(fleet)
    judged(fleet)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 2**64 - 1) | st.integers(0, 50), min_size=1, max_size=40))
def test_any_seq_order_keeps_figures_sane(seqs: list[int]) -> None:
    """Whatever seqs arrive, loss figures stay consistent and never negative."""
    fleet = Fleet(CollectorSection())
    for seq in seqs:
        fleet.receive(wire.dumps({**VALID, "seq": seq}), ("127.0.0.1", 1))
    dev = fleet.device("pi-1")
    assert dev is not None
    assert 0 <= dev["lost"] <= dev["expected"]
    assert dev["received"] + dev["duplicates"] + sum(fleet.stats()["rejected"].values()) == len(
        seqs
    )
    assert 0 <= dev["loss_pct"] <= 100


@pytest.mark.parametrize(("payload", "reason"), [
    (b"\xff\xfe not json", "not_json"),
    (b"[1, 2]", "not_object"),
    (wire.dumps({**VALID, "v": 2}), "bad_version"),
    (wire.dumps({**VALID, "k": "ping"}), "bad_kind"),
    (wire.dumps({**VALID, "dev": "bad id!"}), "bad_device_id"),
    (wire.dumps({**VALID, "dev": "x" * 65}), "bad_device_id"),
    (wire.dumps({**VALID, "run": "nothex"}), "bad_run"),
    (wire.dumps({**VALID, "seq": -1}), "bad_seq"),
    (wire.dumps({**VALID, "seq": 2**64}), "bad_seq"),
    (wire.dumps({**VALID, "int": 0}), "bad_field"),
    (wire.dumps({**VALID, "m": {"cpu": "hot"}}), "bad_field"),
    (b'{"v":1,"pad":"' + b"x" * 2000 + b'"}', "oversize"),
])  # fmt: skip
def test_rejections_are_counted_by_reason(payload: bytes, reason: str) -> None:
    """Each kind of bad payload is counted under its own reason."""
    fleet = Fleet(dataclasses.replace(CollectorSection(), max_payload=1500))
    fleet.receive(payload, ("127.0.0.1", 1))
    assert fleet.stats()["rejected"] == {reason: 1}
    assert len(fleet) == 0


def test_garbage_over_real_udp_is_counted_and_good_traffic_flows() -> None:
    """Garbage datagrams on the real socket are counted while a good device stays up."""
    port = free_port()
    fleet = Fleet(CollectorSection())
    receivers = start_receivers(
        fleet, CollectorSection(udp_listen=f"127.0.0.1:{port}", udp_receive_buffer=1 << 20)
    )
    good = Sender(port, dev="good")
    try:
        for i in range(200):
            good.send_raw(b"\x00garbage" * (i % 7))
            good.send_raw(wire.dumps({**VALID, "v": 9}))
            good.send(i)
        wait_until(lambda: fleet.stats()["received"]["udp"] == 600)
        s = fleet.stats()
        assert s["rejected"] == {"not_json": 200, "bad_version": 200}
        dev = fleet.device("good")
        assert dev is not None
        assert (dev["state"], dev["received"], dev["lost"]) == ("up", 200, 0)
    finally:
        good.close()
        for r in receivers:
            r.close()


def test_flood_of_new_ids_is_bounded() -> None:
    """10x max_devices new ids: memory stays bounded, confirmed devices keep working."""
    limit = 1000
    fleet = Fleet(dataclasses.replace(CollectorSection(), max_devices=limit))
    msg = {**VALID}
    tracemalloc.start()  # from the start, so objects replaced later are seen freed
    for seq in (0, 1):  # two heartbeats each: confirmed, so junk cannot evict them
        for i in range(limit):
            fleet.receive(wire.dumps({**msg, "dev": f"known-{i}", "seq": seq}), ("10.0.0.1", 1))
    gc.collect()
    base = tracemalloc.get_traced_memory()[0]
    for i in range(10 * limit):
        fleet.receive(wire.dumps({**msg, "dev": f"flood-{i}", "seq": 0}), ("10.0.0.2", 1))
        if i % 10 == 0:  # known devices keep reporting through the flood
            known = wire.dumps({**msg, "dev": f"known-{i // 10}", "seq": 2})
            fleet.receive(known, ("10.0.0.1", 1))
    gc.collect()
    grown = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    assert len(fleet) == limit
    assert fleet.stats()["rejected"] == {"max_devices": 10 * limit}
    assert grown < 64 * 1024, f"memory grew by {grown} bytes during the flood"
    for i in range(limit):
        dev = fleet.device(f"known-{i}")
        assert dev is not None
        assert (dev["state"], dev["received"], dev["lost"]) == ("up", 3, 0)


def verdict(data: bytes, parser: str) -> Any:
    """parse_fields' result or rejection reason with one JSON parser forced."""
    saved = wire._fast_loads
    wire._fast_loads = wire._std_loads if parser == "json" else None
    try:
        assert wire.json_parser() == parser
        return wire.parse_fields(data, max_size=4096)
    except wire.WireError as err:
        return err.reason
    finally:
        wire._fast_loads = saved


@pytest.mark.skipif(wire.json_parser() != "orjson", reason="orjson is not installed")
@settings(max_examples=300, deadline=None)
@given(st.one_of(
    st.binary(max_size=200),
    st.builds(lambda k, v: json.dumps({**VALID, k: v}).encode(),
              st.sampled_from(sorted(VALID)), json_values),
    st.builds(lambda s: wire.dumps(VALID).replace(b"42", s.encode()), st.text(max_size=30)),
))  # fmt: skip
def test_both_json_parsers_agree(data: bytes) -> None:
    """orjson (when installed) and the stdlib parser give the same verdict on any payload.

    Integers beyond 64 bits included: both read them as floats (the stdlib through
    `wire._int64`), so a huge one is inf and rejected by either.
    """
    assert verdict(data, "orjson") == verdict(data, "json")
