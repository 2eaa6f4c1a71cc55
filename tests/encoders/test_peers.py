"""The line formats against real peers: etsy statsd (npm) and VictoriaMetrics (Debian).

End to end, a real `fleetbeat agent` sends the same messages twice: as JSON to a
plain UDP receiver (the reference) and in the line format to the peer. What the
peer stored must match the JSON, series by series and value by value.
"""

from __future__ import annotations

import math
import signal
import time
from typing import Any

from hypothesis import Phase, given, settings
from hypothesis import strategies as st
from line_parsers import apply_gauges

from fleetbeat.outputs.base import Identity, Outgoing
from fleetbeat.outputs.influx_lines import InfluxEncoder
from fleetbeat.outputs.statsd_lines import DogStatsdEncoder, StatsdEncoder, clean_name
from helpers import agent_toml, wait_until

SYSTEM = 'interval = "0.1s"\ninclude = ["cpu", "load", "mem", "uptime", "procs", "disk"]'
TAGS = {"site": 'the kitchen, 2=3 "x"', "path": "C:\\temp", "rack": "2"}


def two_outputs(json_port: int, peer_port: int, fmt: str, tags: str = "") -> str:
    """An agent config: JSON to the reference receiver, `fmt` to the peer."""
    config = agent_toml(
        json_port,
        system=SYSTEM,
        extra=f'format = "json"\n\n[[outputs.udp]]\nport = {peer_port}\nformat = "{fmt}"\n',
    )
    return config.replace("jitter = 0\n", f"jitter = 0\ntags = {{ {tags} }}\n")


def run_agent(start_agent: Any, udp_receiver: Any, config: str) -> list[dict[str, Any]]:
    """Run an agent until it sent 4 heartbeats and 4 readings, stop it, return its JSON."""
    agent = start_agent(config)
    udp_receiver.wait_for(
        lambda ms: sum(m["k"] == "hb" for m in ms) >= 4 and sum(m["k"] == "rd" for m in ms) >= 4
    )
    agent.signal(signal.SIGTERM)
    assert agent.wait(5) == 0, agent.log()
    return udp_receiver.wait_for(lambda ms: ms[-1]["k"] == "bye" if ms else False)


def last_values(msgs: list[dict[str, Any]], kind: str) -> dict[str, float]:
    values: dict[str, float] = {}
    for m in msgs:
        if m["k"] == kind:
            values.update(m["m"])
    return values


def toml_tags(tags: dict[str, str]) -> str:
    return ", ".join(f"{k} = '{v}'" for k, v in tags.items())


# --- StatsD -----------------------------------------------------------------------------


def test_agent_feeds_statsd_gauges(statsd_daemon, udp_receiver, start_agent):
    """format = "statsd": the daemon holds a gauge per metric and heartbeat field, final values."""
    msgs = run_agent(
        start_agent, udp_receiver, two_outputs(udp_receiver.port, statsd_daemon.port, "statsd")
    )
    gauges = wait_until(statsd_daemon.gauges, 5)
    hb = [m for m in msgs if m["k"] == "hb"][-1]
    bye = msgs[-1]
    readings = last_values(msgs, "rd")
    base = "fleetbeat.test-dev."
    expected = {f"{base}system.{clean_name(k)}": v for k, v in readings.items()}
    expected.update(
        {
            f"{base}heartbeat.seq": bye["seq"],
            f"{base}heartbeat.up": 0,
            f"{base}heartbeat.interval": 0.1,
            f"{base}heartbeat.drop": hb["drop"],
            f"{base}heartbeat.errors": 0,
            **{f"{base}heartbeat.{k}": v for k, v in hb["m"].items()},
        }
    )
    uptime = gauges.pop(f"{base}heartbeat.uptime")
    assert abs(uptime - (hb["ts"] - hb["bt"])) < 0.002
    assert gauges == expected
    assert bye["seq"] == sum(m["k"] in ("hb", "bye") for m in msgs) - 1


def test_agent_feeds_dogstatsd_gauges_with_tags(statsd_daemon, udp_receiver, start_agent):
    """format = "dogstatsd": gauges named {prefix}.{src}.{metric}, tagged device and agent tags."""
    tags = {"site": "the kitchen", "rack": "2"}
    config = two_outputs(udp_receiver.port, statsd_daemon.port, "dogstatsd", toml_tags(tags))
    msgs = run_agent(start_agent, udp_receiver, config)
    gauges = wait_until(statsd_daemon.gauges, 5)
    # etsy statsd files DogStatsD tags into the key as ;key=value
    suffix = ";device=test-dev;site=the_kitchen;rack=2"
    readings = last_values(msgs, "rd")
    expected = {
        f"fleetbeat.system.{clean_name(k).replace('-', '_')}{suffix}": v
        for k, v in readings.items()
    }
    hb = [m for m in msgs if m["k"] == "hb"][-1]
    expected[f"fleetbeat.heartbeat.seq{suffix}"] = msgs[-1]["seq"]
    expected[f"fleetbeat.heartbeat.up{suffix}"] = 0
    expected[f"fleetbeat.heartbeat.interval{suffix}"] = 0.1
    expected[f"fleetbeat.heartbeat.drop{suffix}"] = hb["drop"]
    expected[f"fleetbeat.heartbeat.errors{suffix}"] = 0
    expected.update({f"fleetbeat.heartbeat.{k}{suffix}": v for k, v in hb["m"].items()})
    gauges.pop(f"fleetbeat.heartbeat.uptime{suffix}")
    assert gauges == expected


def collect(strategy: Any, n: int) -> list[Any]:
    """`n` cases drawn by hypothesis, to check against a peer in one batch."""
    found: list[Any] = []

    @settings(
        max_examples=n, database=None, deadline=None, phases=[Phase.generate], derandomize=True
    )
    @given(strategy)
    def gather(case: Any) -> None:
        found.append(case)

    gather()
    return found


VALUES = st.one_of(
    st.integers(min_value=-(2**53), max_value=2**53),
    st.floats(allow_nan=False, allow_infinity=False),
)


def test_statsd_daemon_reads_any_name_and_value_back(statsd_daemon):
    """Any metric name and finite value (negative ones too) end as that gauge value in statsd."""
    cases = collect(st.dictionaries(st.text(max_size=30), VALUES, min_size=1, max_size=8), 150)
    enc = StatsdEncoder(Identity(dev="dev-1", run="0" * 16, boot_time=0, version="t", tags={}))
    sock_payloads: list[bytes] = []
    for i, metrics in enumerate(cases):
        payloads, too_large = enc.encode(
            Outgoing("rd", ts=1.0, src=f"case{i}", metrics=metrics), lambda: 0, 1432
        )
        assert too_large == 0
        sock_payloads.extend(payloads)
    # the second time every gauge already holds a value: a bare negative would be a delta
    for payload in batches(sock_payloads) + batches(sock_payloads):
        statsd_daemon_send(statsd_daemon, payload)
    want: dict[tuple[str, tuple[str, ...]], float] = {}
    apply_gauges(sock_payloads, want)
    expected = {name: value for (name, _), value in want.items()}
    got = wait_until(lambda: (g := statsd_daemon.gauges()) and len(g) >= len(expected) and g, 10)
    assert got == expected
    assert statsd_daemon.counter("statsd.bad_lines_seen") == 0


def batches(payloads: list[bytes], per_datagram: int = 20) -> list[bytes]:
    """Payloads joined (newline-separated) into fewer datagrams: a burst of small datagrams
    can overflow the peer's socket buffer, and would then prove nothing."""
    n = per_datagram
    return [b"\n".join(payloads[i : i + n]) for i in range(0, len(payloads), n)]


def statsd_daemon_send(daemon: Any, payload: bytes) -> None:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(payload, (daemon.host, daemon.port))


def test_dogstatsd_lines_are_accepted_by_statsd(statsd_daemon):
    """DogStatsD lines with awkward tag values are read by statsd without a bad line."""
    enc = DogStatsdEncoder(
        Identity(
            dev="d", run="0" * 16, boot_time=0, version="t", tags={"a": "x,y|z#w", "b": "ü é"}
        ),
    )
    payloads, _ = enc.encode(Outgoing("rd", ts=1.0, src="s", metrics={"m": -2.5}), lambda: 0, 1432)
    tags = "|#device:d,a:x_y_z_w,b:ü_é"
    assert payloads == [f"fleetbeat.s.m:0|g{tags}\nfleetbeat.s.m:-2.5|g{tags}".encode()]
    statsd_daemon_send(statsd_daemon, payloads[0])
    gauges = wait_until(statsd_daemon.gauges, 5)
    # etsy statsd keeps only ASCII in keys: "ü_é" becomes "_"
    assert gauges == {"fleetbeat.s.m;device=d;a=x_y_z_w;b=_": -2.5}
    assert statsd_daemon.counter("statsd.bad_lines_seen") == 0


# --- VictoriaMetrics (InfluxDB line protocol) -------------------------------------------


def labels(**kw: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(kw.items()))


def test_agent_feeds_victoria_metrics(victoria_metrics, udp_receiver, start_agent):
    """format = "influx": every reading and heartbeat sample is in VictoriaMetrics, tags intact."""
    config = two_outputs(udp_receiver.port, victoria_metrics.influx_port, "influx", toml_tags(TAGS))
    msgs = run_agent(start_agent, udp_receiver, config)
    readings = [m for m in msgs if m["k"] == "rd"]
    beats = [m for m in msgs if m["k"] in ("hb", "bye")]
    tags = {"device": "test-dev", **TAGS}
    expected: dict[tuple[tuple[str, str], ...], list[tuple[int, float]]] = {}

    def add(name: str, ts: float, value: float) -> None:
        key = labels(__name__=name, **tags)
        expected.setdefault(key, []).append((round(ts * 1000), value))

    for m in readings:
        for k, v in m["m"].items():
            add(f"system_{k}", m["ts"], v)
    for m in beats:
        add("fleetbeat_heartbeat_seq", m["ts"], m["seq"])
        add("fleetbeat_heartbeat_up", m["ts"], 1 if m["k"] == "hb" else 0)
        if m["k"] == "hb":
            add("fleetbeat_heartbeat_interval", m["ts"], m["int"])
            add("fleetbeat_heartbeat_uptime", m["ts"], m["ts"] - m["bt"])
            add("fleetbeat_heartbeat_drop", m["ts"], m["drop"])
            add("fleetbeat_heartbeat_errors", m["ts"], 0)
            for k, v in m["m"].items():
                add(f"fleetbeat_heartbeat_{k}", m["ts"], v)
    n_samples = sum(len(v) for v in expected.values())
    got = victoria_metrics.wait_for(n_samples, '{device="test-dev"}')
    assert set(got) == set(expected)
    for key, samples in expected.items():
        # the bye may share its millisecond with the last heartbeat: compare in (t, value) order
        stored, samples = sorted(got[key]), sorted(samples)  # noqa: PLW2901
        assert [t for t, _ in stored] == [t for t, _ in samples], key
        for (_, a), (_, b) in zip(stored, samples):
            tolerance = 0.002 if "uptime" in dict(key)["__name__"] else 0.0
            assert math.isclose(a, b, rel_tol=1e-12, abs_tol=tolerance), (key, a, b)


NAME = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=20).filter(
    lambda s: s.strip() == s
)
TAG_KEY = st.from_regex(r"[A-Za-z][A-Za-z0-9_.-]{0,15}", fullmatch=True)


def test_victoria_metrics_reads_any_name_and_tag_back(victoria_metrics):
    """Names and tag values with spaces, commas, equals signs, quotes and backslashes survive."""
    cases = collect(
        st.tuples(
            st.dictionaries(TAG_KEY, NAME, max_size=3),
            st.dictionaries(NAME, VALUES, min_size=1, max_size=5),
        ),
        60,
    )
    cases.append(({"k": "a b,c=d"}, {"x y,z=1": 1.5, 'q"\\': -2}))
    expected: dict[tuple[tuple[str, str], ...], float] = {}
    sent: list[bytes] = []
    now = round(time.time(), 3)  # VictoriaMetrics refuses samples older than its retention
    for i, (tags, metrics) in enumerate(cases):
        dev = f"dev-{i}"
        enc = InfluxEncoder(Identity(dev=dev, run="0" * 16, boot_time=0, version="t", tags=tags))
        payloads, too_large = enc.encode(
            Outgoing("rd", ts=now, src=f"case {i},x", metrics=metrics), lambda: 0, 1432
        )
        assert too_large == 0
        sent.extend(payloads)
        want_tags = {k: v for k, v in tags.items() if k != "device"}
        for name, value in metrics.items():
            field = name.replace('"', "_")  # documented: a quote in a field key is written _
            key = labels(__name__=f"case {i},x_{field}", device=dev, **want_tags)
            expected[key] = float(value)
    for payload in batches(sent):
        victoria_metrics.send(payload)
    got = victoria_metrics.wait_for(len(expected))
    assert set(got) - set(expected) == set()
    assert set(expected) - set(got) == set()
    for key, value in expected.items():
        ((ts, stored),) = got[key]
        assert ts == round(now * 1000)
        assert math.isclose(stored, value, rel_tol=1e-12), (key, stored, value)
