"""Hostile datagrams against a real collector process: it survives them, and restarts."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Callable

from collector_helpers import CollectorProcess, Sender

from fleetbeat import wire
from fleetbeat.collector.config import CollectorSection
from fleetbeat.collector.fleet import Fleet
from fleetbeat.collector.metrics import render
from helpers import free_port, wait_until


def crash_datagrams(sender: Sender) -> list[bytes]:
    """Every one-datagram crash from issue 10, as the device itself would send it."""
    base = sender.message(5)
    big = "1" * 400
    return [
        json.dumps({**base, "drop": 2**63}).encode(),
        json.dumps({**base, "bt": 2**63}).encode(),
        json.dumps({**base, "int": 2**63}).encode(),
        json.dumps({**base, "int": 1e308}).encode(),
        json.dumps({**base, "ver": "\ud800"}).encode(),
        json.dumps({**base, "ts": 10**400}).encode(),
        wire.dumps(base).replace(b'"cpu":1.5', b'"cpu":' + big.encode()),
        b'{"v":1,"x":' + b"[" * 20000 + b"]" * 20000 + b"}",
        json.dumps({**sender.message(0, "bye"), "run": "fedcba9876543210"}).encode(),
    ]


def test_crash_datagrams_are_counted_and_a_restart_reloads_the_devices(
    start_collector: Callable[..., CollectorProcess], make_sender: Callable[..., Sender],
    tmp_path: Path,
) -> None:  # fmt: skip
    """The issue's crash datagrams are rejected by reason; the collector stops cleanly and restarts."""
    col = start_collector()
    wait_until(col.http_url)
    sender = make_sender(col.udp_port, dev="victim")
    for seq in range(5):
        sender.send(seq)
    bad = crash_datagrams(sender)
    for data in bad:
        sender.send_raw(data)
    sender.send(5)
    wait_until(lambda: col.api("/api/stats")["stats"]["received"]["udp"] == 6 + len(bad))
    stats = col.api("/api/stats")["stats"]
    assert stats["rejected"] == {"bad_field": 6, "bad_text": 1, "too_deep": 1, "unknown_run": 1}
    assert stats["kernel_drops"] == {"udp": 0}
    dev = col.api("/api/devices/victim")["device"]
    assert (dev["state"], dev["received"], dev["run"]) == ("up", 6, sender.run)
    assert col.terminate() == 0
    log = col.log()
    assert "Traceback" not in log and "bug" not in log, log
    again = start_collector(udp_port=free_port(), state_dir=col.state_dir, name="again")
    wait_until(again.http_url)
    assert "1 devices reloaded" in again.log()
    dev = again.api("/api/devices/victim")["device"]
    assert (dev["received"], dev["run"]) == (6, sender.run)
    assert again.terminate() == 0


def test_kernel_drops_are_counted_under_a_flood() -> None:
    """A flood into a tiny receive buffer: what the kernel drops shows in stats and /metrics."""
    from fleetbeat.collector.receivers.udp import UdpReceiver, bind_udp

    port = free_port()
    fleet = Fleet(CollectorSection())
    sock = bind_udp(f"127.0.0.1:{port}", 4096)
    rx = UdpReceiver(
        fleet=fleet, config=fleet.config, sock=sock
    )  # not started yet: nobody reads, the buffer fills
    out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sent = 2000
    try:
        for i in range(sent):
            out.sendto(
                wire.dumps({**Sender(port).message(i), "dev": f"d{i % 10}"}), sock.getsockname()
            )
        drops = fleet.stats()["kernel_drops"]["udp"]
        assert drops > sent // 2
        rx.start()
        wait_until(lambda: fleet.stats()["received"]["udp"] == sent - drops)
        assert fleet.stats()["kernel_drops"]["udp"] == drops
        text = render(fleet.devices(), fleet.stats())
        assert f'fleetbeat_kernel_dropped_datagrams_total{{transport="udp"}} {drops}' in text
    finally:
        out.close()
        rx.close()


def test_kernel_drop_counter_reads_the_socket_line(tmp_path: Path) -> None:
    """The drops column is read from the line of the socket's inode, in udp or udp6."""
    from fleetbeat.collector.receivers.udp import kernel_drops

    net = tmp_path / "net"
    net.mkdir()
    head = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n"
    line = "  {sl}: 0100007F:2612 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 {inode} 2 0000000000000000 {drops}\n"
    (net / "udp").write_text(head + line.format(sl=1, inode=111, drops=5))
    (net / "udp6").write_text(head + line.format(sl=2, inode=222, drops=42))
    assert kernel_drops(111, str(tmp_path)) == 5
    assert kernel_drops(222, str(tmp_path)) == 42
    assert kernel_drops(333, str(tmp_path)) is None
    assert kernel_drops(111, str(tmp_path / "missing")) is None
