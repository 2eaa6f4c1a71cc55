"""UDP output: datagrams on real loopback sockets; every failure is a counted drop, never a raise."""

from __future__ import annotations

import errno
import json
import socket
import time

import pytest

from fleetbeat.outputs.base import Identity, Outgoing
from fleetbeat.outputs.json_wire import JsonEncoder
from fleetbeat.outputs.udp import UdpConfig, UdpOutput
from helpers import Seq, UdpReceiver, agent_toml, wait_until

IDENT = Identity(dev="pi-1", run="0123456789abcdef", boot_time=1700000000, version="0.1.0",
                 tags={"site": "lab"})  # fmt: skip


def test_payload_reaches_a_loopback_receiver(udp_receiver):
    """A payload sent to 127.0.0.1 arrives as exactly one datagram and is counted as sent."""
    out = UdpOutput(UdpConfig(port=udp_receiver.port))
    out.start()
    out.send(b'{"hello":1}')
    assert udp_receiver.poll(2.0) == [b'{"hello":1}']
    assert (out.tally.sent, out.tally.dropped) == (1, 0)
    out.close()


def test_ipv6_loopback():
    """An IPv6 literal host sends over an AF_INET6 socket."""
    rx = UdpReceiver("::1")
    try:
        out = UdpOutput(UdpConfig(host="::1", port=rx.port))
        out.start()
        out.send(b"six")
        assert rx.poll(2.0) == [b"six"]
        out.close()
    finally:
        rx.close()


def test_nothing_listening_is_counted_as_refused():
    """ECONNREFUSED (ICMP port unreachable) is a counted drop, and send never raises."""
    rx = UdpReceiver()
    port = rx.port
    rx.close()  # nothing listens on the port now
    out = UdpOutput(UdpConfig(port=port))
    out.start()
    for _ in range(20):
        out.send(b"x")
        time.sleep(0.01)
    assert out.tally.by_reason.get("refused", 0) >= 1
    assert out.tally.sent + out.tally.dropped == 20
    out.close()


def test_unresolved_name_drops_without_blocking():
    """Until the background resolver has an address, sends are dropped as `unresolved` at once."""
    calls = []

    def slow_resolver(*args):
        calls.append(args)
        time.sleep(0.5)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    out = UdpOutput(UdpConfig(host="collector.example", port=9), resolver=slow_resolver)
    out.start()
    t0 = time.monotonic()
    for _ in range(100):
        out.send(b"x")
    assert time.monotonic() - t0 < 0.4  # the resolver takes 0.5 s: no send waited for it
    assert out.tally.by_reason == {"unresolved": 100}
    wait_until(lambda: calls)
    out.close(timeout=0.1)


def test_name_resolved_in_background_then_used(udp_receiver):
    """A host name is resolved by the background thread and then datagrams flow."""
    out = UdpOutput(UdpConfig(host="localhost", port=udp_receiver.port))
    out.start()
    wait_until(lambda: out._target is not None)
    out.send(b"named")
    assert udp_receiver.poll(2.0) == [b"named"]
    out.close()


class FailingSocket:
    """A socket whose send fails with a given errno (the kernel rarely does this on loopback)."""

    def __init__(self, err: int) -> None:
        self.err = err
        self.family = socket.AF_INET

    def setblocking(self, flag: bool) -> None:
        pass

    def connect(self, addr) -> None:
        pass

    def send(self, data: bytes) -> int:
        raise OSError(self.err, errno.errorcode.get(self.err, "?"))

    def close(self) -> None:
        pass


@pytest.mark.parametrize(
    ("err", "reason"),
    [
        (errno.EAGAIN, "buffer_full"),
        (errno.ENOBUFS, "no_buffer_space"),
        (errno.ECONNREFUSED, "refused"),
        (errno.ENETUNREACH, "network_unreachable"),
        (errno.EHOSTUNREACH, "host_unreachable"),
        (errno.EPERM, "blocked"),
        (errno.EMSGSIZE, "too_large"),
        (errno.EIO, "os_error"),
    ],
)
def test_every_send_error_is_a_drop_by_reason(err, reason):
    """Each errno of the delivery rules maps to a drop reason; nothing raises out of send."""
    out = UdpOutput(UdpConfig(), socket_factory=lambda fam, typ: FailingSocket(err))
    out.send(b"x")
    out.send(b"y")
    assert out.tally.by_reason == {reason: 2}
    assert out.tally.sent == 0


def test_heartbeat_fields_and_types():
    """A heartbeat carries every wire v1 field with the documented types."""
    enc = JsonEncoder(IDENT)
    msg = Outgoing("hb", ts=1764160000.1234, interval=10.0, drop=3, drop_by={"refused": 3},
                   metrics={"cpu": 3.5, "mem": 41.2})  # fmt: skip
    [payload], too_large = enc.encode(msg, Seq(), 1432)
    assert too_large == 0
    obj = json.loads(payload)
    assert obj == {
        "v": 1, "k": "hb", "dev": "pi-1", "run": "0123456789abcdef", "seq": 0,
        "ts": 1764160000.123, "int": 10.0, "bt": 1700000000, "ver": "0.1.0", "drop": 3,
        "drop_by": {"refused": 3}, "tags": {"site": "lab"}, "m": {"cpu": 3.5, "mem": 41.2},
    }  # fmt: skip
    assert list(obj)[:5] == ["v", "k", "dev", "run", "seq"]


def test_readings_over_the_limit_are_split_each_with_its_own_seq():
    """A reading larger than max_datagram becomes several messages, each fitting, seq contiguous."""
    enc = JsonEncoder(IDENT)
    metrics = {f"net.eth{i}.rx_bytes_per_second": 123456.7 + i for i in range(60)}
    payloads, too_large = enc.encode(
        Outgoing("rd", ts=1.0, src="system", metrics=metrics), Seq(), 300
    )
    assert too_large == 0 and len(payloads) > 5
    assert all(len(p) <= 300 for p in payloads)
    objs = [json.loads(p) for p in payloads]
    assert [o["seq"] for o in objs] == list(range(len(objs)))
    merged = {k: v for o in objs for k, v in o["m"].items()}
    assert merged == metrics
    assert list(merged) == list(metrics)  # order kept


def test_a_single_metric_too_large_is_dropped_not_truncated():
    """A metric that cannot fit even alone is counted too_large; the others still go out."""
    enc = JsonEncoder(IDENT)
    metrics = {"x" * 400: 1.0, "ok": 2.0}
    payloads, too_large = enc.encode(Outgoing("rd", ts=1.0, src="s", metrics=metrics), Seq(), 300)
    assert too_large == 1
    assert [json.loads(p)["m"] for p in payloads] == [{"ok": 2.0}]


def test_agent_datagrams_are_exact_and_contiguous(udp_receiver, start_agent):
    """A real agent's hb and rd streams each count from 0 without gaps, within max_datagram."""
    agent = start_agent(agent_toml(udp_receiver.port, extra="max_datagram = 300"))
    msgs = udp_receiver.wait_for(
        lambda ms: sum(m["k"] == "hb" for m in ms) >= 5 and sum(m["k"] == "rd" for m in ms) >= 5
    )
    agent.stop()
    assert all(len(d) <= 300 for d in udp_receiver.datagrams)
    for stream in (("hb", "bye"), ("rd",)):
        seqs = [m["seq"] for m in msgs if m["k"] in stream]
        assert seqs == list(range(len(seqs)))
    runs = {m["run"] for m in msgs}
    assert len(runs) == 1
    hb = next(m for m in msgs if m["k"] == "hb")
    assert hb["dev"] == "test-dev" and hb["int"] == 0.1
    assert isinstance(hb["ts"], float) and isinstance(hb["bt"], int) and hb["drop"] == 0
    assert set(hb["m"]) <= {"cpu", "mem", "temp"} and "cpu" in hb["m"]
    rd = next(m for m in msgs if m["k"] == "rd")
    assert rd["src"] == "system" and "rate" not in rd
    assert all(isinstance(v, (int, float)) for v in rd["m"].values())


def test_collector_unreachable_agent_keeps_schedule(tmp_path, start_agent, udp_receiver):
    """With one output refused, heartbeats on another output keep their cadence."""
    dead = UdpReceiver()
    dead_port = dead.port
    dead.close()
    config = (
        agent_toml(udp_receiver.port, interval="0.1s")
        + f"""
[[outputs.udp]]
host = "127.0.0.1"
port = {dead_port}
"""
    )
    agent = start_agent(config)
    udp_receiver.wait_for(lambda ms: any(m["k"] == "hb" for m in ms), timeout=10)
    t0 = time.monotonic()  # from the first heartbeat: interpreter start-up is not the point
    udp_receiver.wait_for(lambda ms: sum(m["k"] == "hb" for m in ms) >= 21, timeout=10)
    elapsed = time.monotonic() - t0
    assert elapsed < 4.0, f"20 heartbeats at 0.1 s took {elapsed:.1f} s"
    agent.stop()
    assert "refused" in agent.log()


def test_a_closed_output_drops_instead_of_reopening(udp_receiver):
    """After close(), send drops as `closed`: nothing goes out after a bye, no socket leaks."""
    out = UdpOutput(UdpConfig(port=udp_receiver.port))
    out.start()
    out.send(b"before")
    out.close()
    out.send(b"after")
    assert udp_receiver.poll(1.0) == [b"before"]
    assert out.tally.by_reason == {"closed": 1}
    assert out._sock is None


def test_a_heartbeat_too_large_sheds_its_extras_but_goes_out():
    """Over the limit, a heartbeat drops m, err and tags, never itself: liveness comes first."""
    ident = Identity(dev="pi-1", run="0123456789abcdef", boot_time=1, version="0.1.0",
                     tags={"big": "x" * 2000})  # fmt: skip
    msg = Outgoing("hb", ts=5.0, interval=10.0, metrics={"cpu": 1.0},
                   errors={"system": {"mem": 1}})  # fmt: skip
    [payload], too_large = JsonEncoder(ident).encode(msg, Seq(), 1432)
    obj = json.loads(payload)
    assert too_large == 0 and len(payload) <= 1432
    assert obj["k"] == "hb" and obj["m"] == {} and "tags" not in obj and "err" not in obj


def test_size_limit_counts_bytes_not_characters():
    """A heartbeat whose tags are non-ASCII stays within max_datagram in bytes, not characters."""
    ident = Identity(dev="pi-1", run="0123456789abcdef", boot_time=1, version="0.1.0",
                     tags={"site": "Küche-" + "ü" * 300})  # fmt: skip
    msg = Outgoing("hb", ts=5.0, interval=10.0, metrics={"cpu": 1.0})
    [payload], too_large = JsonEncoder(ident).encode(msg, Seq(), 600)
    assert len(payload) <= 600 and too_large == 0
    assert "tags" not in json.loads(payload)  # 600+ bytes of tags could not fit
