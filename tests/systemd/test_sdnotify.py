"""sd_notify: READY, the watchdog from the scheduler loop, STATUS, STOPPING, over a real socket."""

from __future__ import annotations

import os
import re
import shutil
import signal
import statistics
import tempfile
import time
from pathlib import Path

from notify_receiver import NotifyReceiver

from fleetbeat.sdnotify import Notifier, Supervision
from helpers import agent_toml, subprocess_env

WATCHDOG_USEC = 400_000  # systemd's WatchdogSec=0.4s: the agent pings every 0.2 s
THROTTLED = "devices/platform/soc/soc:firmware/get_throttled"


def notify_env(rx: NotifyReceiver, **extra: str) -> dict[str, str]:
    return subprocess_env(NOTIFY_SOCKET=rx.address, WATCHDOG_USEC=str(WATCHDOG_USEC), **extra)


def sysfs_tree(tmp_path: Path, throttled: str = "0x0\n") -> Path:
    """A sysfs root whose Raspberry Pi throttling flags file the system sensor reads."""
    root = tmp_path / "sys"
    path = root / THROTTLED
    path.parent.mkdir(parents=True)
    path.write_text(throttled)
    return root


def system_toml(port: int, interval: str = "0.1s") -> str:
    return agent_toml(
        port,
        interval=interval,
        system=f'interval = "{interval}"\ninclude = ["cpu", "throttle"]',
    ).replace("[agent]\n", '[agent]\nheartbeat_metrics = ["cpu"]\n')


def test_notifier_is_a_noop_without_notify_socket():
    """Without $NOTIFY_SOCKET nothing is sent and no watchdog is expected."""
    n = Notifier(env={"WATCHDOG_USEC": "1000000"})
    assert not n.enabled
    assert n.watchdog_interval is None
    assert n.ready("x") is False
    assert n.watchdog() is False


def test_notifier_speaks_to_abstract_and_path_sockets(notify_socket):
    """Messages reach both an abstract-namespace socket (@name) and a socket file."""
    Notifier(env={"NOTIFY_SOCKET": notify_socket.address}).ready("up\nand running")
    notify_socket.wait_for(lambda: notify_socket.times("READY"))
    assert notify_socket.messages[0][1] == {"READY": "1", "STATUS": "up and running"}

    short = tempfile.mkdtemp(prefix="fb-", dir="/tmp")  # sun_path holds only 108 bytes
    try:
        rx = NotifyReceiver(os.path.join(short, "notify"))
        n = Notifier(env={"NOTIFY_SOCKET": rx.address})
        assert n.stopping("bye") and n.reloading()
        rx.wait_for(lambda: len(rx.messages) == 2)
        assert rx.messages[0][1] == {"STOPPING": "1", "STATUS": "bye"}
        assert rx.messages[1][1]["RELOADING"] == "1"
        assert int(rx.messages[1][1]["MONOTONIC_USEC"]) > 0
        rx.close()
    finally:
        shutil.rmtree(short)


def test_watchdog_belongs_to_the_process_named_by_watchdog_pid():
    """WATCHDOG_USEC counts only when WATCHDOG_PID is unset or this process's pid."""
    env = {"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "1000000"}
    assert Notifier(env=env).watchdog_interval == 0.5
    assert Notifier(env={**env, "WATCHDOG_PID": str(os.getpid())}).watchdog_interval == 0.5
    assert Notifier(env={**env, "WATCHDOG_PID": "1"}).watchdog_interval is None
    assert Notifier(env={**env, "WATCHDOG_USEC": "0"}).watchdog_interval is None


def test_a_vanished_notify_socket_is_not_an_error():
    """Sending to a socket nobody listens on returns False instead of raising."""
    n = Notifier(env={"NOTIFY_SOCKET": f"@fleetbeat-nobody-{os.urandom(4).hex()}"})
    assert n.watchdog() is False
    assert n.ready() is False


def test_supervision_pings_at_half_the_timeout_and_only_pushes_changed_status(notify_socket):
    """tick() pings when half of WATCHDOG_USEC has passed and sends STATUS= only on change."""
    now = [100.0]
    status = ["a"]
    n = Notifier(env={"NOTIFY_SOCKET": notify_socket.address, "WATCHDOG_USEC": "2000000"})
    sup = Supervision(n, lambda: status[0], clock=lambda: now[0], status_every=0.5)
    sup.ready()
    assert sup.tick() == 101.0  # next ping due one second (half of 2 s) after the first
    now[0] = 100.9
    sup.tick()
    status[0] = "b"
    now[0] = 101.0
    assert sup.tick() == 102.0
    notify_socket.poll(0.2)
    assert notify_socket.kinds() == ["READY+STATUS", "WATCHDOG", "WATCHDOG", "STATUS"]
    assert notify_socket.values("STATUS") == ["a", "b"]


def test_agent_notifies_ready_watchdog_status_and_stopping(
    udp_receiver, start_agent, notify_socket, tmp_path
):
    """A real agent sends READY=1, pings every WATCHDOG_USEC/2 from its loop, STOPPING=1 on exit."""
    agent = start_agent(system_toml(udp_receiver.port), "--sysfs-root",
                        str(sysfs_tree(tmp_path)), env=notify_env(notify_socket))  # fmt: skip
    notify_socket.wait_for(lambda: notify_socket.times("READY", "1"))
    assert notify_socket.kinds()[0] == "READY+STATUS"
    t_ready = notify_socket.times("READY")[0]
    notify_socket.collect(2.0)
    pings = [t for t in notify_socket.times("WATCHDOG", "1") if t >= t_ready]
    gaps = [b - a for a, b in zip(pings, pings[1:])]
    print(f"{len(pings)} pings in 2 s; gaps median {statistics.median(gaps):.3f} s, "
          f"max {max(gaps):.3f} s")  # fmt: skip
    assert 0.15 <= statistics.median(gaps) <= 0.3
    assert max(gaps) < WATCHDOG_USEC / 1e6  # never long enough for systemd to kill it

    statuses = notify_socket.values("STATUS")
    assert all(re.fullmatch(r"\d+ messages sent, \d+ dropped; no sensor errors", s)
               for s in statuses), statuses  # fmt: skip
    last_sent = int(statuses[-1].split()[0])
    assert last_sent > 10  # counts move: heartbeats and readings every 0.1 s
    assert last_sent <= len(udp_receiver.messages())

    agent.signal(signal.SIGTERM)
    assert agent.wait(3) == 0
    notify_socket.wait_for(lambda: notify_socket.times("STOPPING", "1"))
    assert not [k for k in notify_socket.kinds() if "READY" in k][1:]  # READY once, no reload


def test_status_names_the_sensors_with_errors(udp_receiver, start_agent, notify_socket, tmp_path):
    """STATUS= lists a sensor whose reads fail, with its error count."""
    sysfs = sysfs_tree(tmp_path, throttled="not hex\n")
    start_agent(system_toml(udp_receiver.port), "--sysfs-root", str(sysfs),
                env=notify_env(notify_socket))  # fmt: skip
    notify_socket.wait_for(
        lambda: any("sensors with errors: system (" in s for s in notify_socket.values("STATUS"))
    )
    hb = udp_receiver.wait_for(lambda ms: any("err" in m for m in ms))
    assert any(m.get("err", {}).get("system", {}).get("throttle") for m in hb)


def test_watchdog_pings_stop_while_the_loop_is_stuck(
    udp_receiver, start_agent, notify_socket, tmp_path
):
    """A sensor read that hangs (a sysfs file turned into a FIFO) stops the pings until it returns.

    No debug hook: the system sensor really blocks in open() on the FIFO, as a
    read of a wedged driver file would; writing to the FIFO releases it.
    """
    sysfs = sysfs_tree(tmp_path)
    start_agent(system_toml(udp_receiver.port), "--sysfs-root", str(sysfs),
                env=notify_env(notify_socket))  # fmt: skip
    notify_socket.wait_for(lambda: len(notify_socket.times("WATCHDOG")) >= 3)

    target = sysfs / THROTTLED
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    os.link(fifo, tmp_path / "fifo-handle")  # keeps a name for the FIFO once it is replaced
    os.replace(fifo, target)
    time.sleep(0.5)  # the next read (0.1 s) blocks; a ping already on its way may land
    stuck_pings = len(notify_socket.times("WATCHDOG"))
    stuck_hbs = len(udp_receiver.messages())
    time.sleep(1.2)  # three times the watchdog timeout
    assert len(notify_socket.times("WATCHDOG")) == stuck_pings
    assert len(udp_receiver.messages()) == stuck_hbs  # the loop is really stuck, not just quiet

    (tmp_path / "regular").write_text("0x0\n")
    os.replace(tmp_path / "regular", target)  # later reads find a normal file again
    fd = os.open(tmp_path / "fifo-handle", os.O_WRONLY | os.O_NONBLOCK)  # the reader is waiting
    os.write(fd, b"0x0\n")
    os.close(fd)
    notify_socket.wait_for(lambda: len(notify_socket.times("WATCHDOG")) >= stuck_pings + 3)
    udp_receiver.wait_for(lambda ms: len(ms) > stuck_hbs + 3)
