"""Storage faults fail loudly and lose nothing that could be kept: full disk, deleted or
damaged database, rows SQLite refuses."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Callable

import pytest
from collector_helpers import CollectorProcess, Sender, stored_devices, stored_events

from fleetbeat import wire
from fleetbeat.collector.config import CollectorSection
from fleetbeat.collector.rows import ROW_COLUMNS
from fleetbeat.collector.store import DB_NAME, Store
from helpers import fleetbeat_cmd, subprocess_env, wait_until


class SmallDisk:
    """A tmpfs of a few MiB mounted for the test; `fill()` takes every free byte."""

    def __init__(self, path: Path, size: str = "4m") -> None:
        self.path = path
        path.mkdir()
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
            check=False,
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root): {proc.stderr.strip()}")
        self.filler = path / "filler"

    def fill(self) -> None:
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for size in (65536, 4096, 1):  # big blocks, then the last few bytes
                try:
                    while True:
                        os.write(fd, b"\0" * size)
                except OSError:
                    pass
        finally:
            os.close(fd)

    def free(self) -> None:
        self.filler.unlink()

    def unmount(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], check=False)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    """A 4 MiB tmpfs as the collector's state_dir (root only; skipped otherwise)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    disk = SmallDisk(tmp_path / "state")
    yield disk
    disk.unmount()


def _send_new_devices(sender: Sender, prefix: str, n: int) -> None:
    # 20 metrics each (within max_metric_bytes): bytes enough that SQLite must grow its files
    metrics = {f"metric_{i}": float(i) for i in range(20)}
    for i in range(n):
        sender.dev = f"{prefix}-{i}"
        sender.send(0, m=metrics)
        sender.send(1, m=metrics)  # a device heard once is not stored (not yet confirmed)


@pytest.mark.slow
def test_full_disk_is_logged_once_shown_in_health_and_recovered(
    small_disk: SmallDisk,
    start_collector: Callable[..., CollectorProcess],
    make_sender: Callable[..., Sender],
) -> None:
    """A full disk is one error line (not one per flush), /healthz says 503, and freeing the
    disk writes every device that arrived meanwhile."""
    col = start_collector(state_dir=small_disk.path)
    sender = make_sender(col.udp_port)
    _send_new_devices(sender, "before", 5)
    wait_until(lambda: len(stored_devices(small_disk.path)) == 5)
    small_disk.fill()
    for round_ in range(20):  # flushes every 0.2 s: many failed flushes, one error line
        _send_new_devices(sender, f"during{round_}", 20)
        time.sleep(0.05)
    wait_until(lambda: "store: cannot write" in col.log() and col.http_url(), timeout=10)
    wait_until(lambda: col.log().count("store: cannot write") == 1 and _healthz(col)[0] == 503)
    _, body = _healthz(col)
    assert "database or disk is full" in body["reason"]
    assert col.proc.poll() is None
    small_disk.free()
    wait_until(lambda: "store: writing again" in col.log(), timeout=10)
    assert _healthz(col)[0] == 200
    assert len(stored_devices(small_disk.path)) == 5 + 20 * 20
    assert col.log().count("store: cannot write") == 1


def _healthz(col: CollectorProcess) -> tuple[int, dict[str, str]]:
    import json
    import urllib.error
    import urllib.request

    url = col.http_url()
    assert url
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=5) as resp:  # noqa: S310
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.mark.slow
def test_sigterm_on_a_full_disk_says_what_was_lost_and_exits_74(
    small_disk: SmallDisk,
    start_collector: Callable[..., CollectorProcess],
    make_sender: Callable[..., Sender],
) -> None:
    """The last flush at SIGTERM that fails is logged with what it lost; the exit is not 0."""
    col = start_collector(state_dir=small_disk.path)
    sender = make_sender(col.udp_port)
    small_disk.fill()
    _send_new_devices(sender, "unsaved", 30)
    wait_until(col.http_url)
    wait_until(lambda: len(col.api("/api/devices")["devices"]) == 30)
    assert col.terminate() == 74
    log = col.log()
    assert "the last write of the state" in log and "Lost: the changes of 30 devices" in log


@pytest.mark.slow
def test_prune_on_a_full_disk_does_not_stop_the_collector(
    small_disk: SmallDisk,
    start_collector: Callable[..., CollectorProcess],
) -> None:
    """The retention prune failing with a full disk is logged; the collector keeps running
    and prunes once there is room."""
    store = Store(str(small_disk.path), retention=60.0)
    old = time.time() - 3600
    events = [
        {"time": old + i * 1e-3, "device": f"d{i}", "from": "up", "to": "down", "reason": "x"}
        for i in range(8_000)  # with the history's indexes, the 4 MiB hold twice this
    ]
    store.write([], events)
    store.close()
    # retention 60 s: a prune every 6 s
    col = start_collector(state_dir=small_disk.path, extra='event_retention = "60s"')
    small_disk.fill()
    wait_until(lambda: "cannot prune" in col.log(), timeout=15)
    assert col.proc.poll() is None
    small_disk.free()
    wait_until(lambda: "deleted 8000 events older than the retention" in col.log(), timeout=15)
    assert col.proc.poll() is None


def test_a_full_disk_shows_in_the_systemd_status_line(small_disk: SmallDisk) -> None:
    """STATUS= (systemctl status) says the store cannot write, and health() gives the reason."""
    from fleetbeat.collector.config import CollectorConfig
    from fleetbeat.collector.service import Collector

    section = CollectorSection(
        udp_listen="127.0.0.1:0", http_listen="127.0.0.1:0", state_dir=str(small_disk.path)
    )
    col = Collector(CollectorConfig(collector=section))
    col.start()
    try:
        sender = Sender(col.receivers[0].address[1])
        _send_new_devices(sender, "d", 50)
        sender.close()
        wait_until(lambda: len(col.fleet) == 50)
        small_disk.fill()
        deadline = time.monotonic() + 10
        while col.flush():  # WAL pages left over may take a few batches before it fails
            assert time.monotonic() < deadline, "the store never failed on a full disk"
            sender = Sender(col.receivers[0].address[1])
            _send_new_devices(sender, f"more{time.monotonic_ns()}", 50)
            sender.close()
            time.sleep(0.05)
        assert "store cannot write" in col.status_line()
        assert "database or disk is full" in (col.health() or "")
        small_disk.free()
        assert col.flush()
        assert col.health() is None
        assert "store" not in col.status_line()
    finally:
        col.close()


def test_a_database_deleted_under_the_collector_is_recreated_with_everything(
    tmp_path: Path,
    start_collector: Callable[..., CollectorProcess],
    make_sender: Callable[..., Sender],
) -> None:
    """Deleting fleetbeat.db while the collector runs is noticed at the next flush: a new
    file is written with every device, old and new, and the recent events."""
    col = start_collector()
    sender = make_sender(col.udp_port, dev="first")
    sender.send(0)
    sender.send(1)
    db = col.state_dir / DB_NAME
    wait_until(lambda: "first" in stored_devices(col.state_dir))
    for suffix in ("", "-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    sender.dev = "second"
    sender.send(0)
    sender.send(1)
    wait_until(lambda: "was deleted under the running collector" in col.log())
    wait_until(lambda: {"first", "second"} <= set(stored_devices(col.state_dir)))
    assert {e["device"] for e in stored_events(col.state_dir)} >= {"first", "second"}


def _collector_exit(tmp_path: Path, state: Path) -> subprocess.CompletedProcess[str]:
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'[collector]\nudp_listen = "127.0.0.1:0"\nhttp_listen = "127.0.0.1:0"\n'
        f'state_dir = "{state}"\n'
    )
    return subprocess.run(
        fleetbeat_cmd("collector", "-c", str(cfg)),
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
        env=subprocess_env(),
    )


def test_a_file_that_is_not_a_database_is_a_clear_message(tmp_path: Path) -> None:
    """A state file of garbage stops the start with its path and what to do, no traceback."""
    state = tmp_path / "state"
    state.mkdir()
    (state / DB_NAME).write_bytes(os.urandom(8192))
    proc = _collector_exit(tmp_path, state)
    assert proc.returncode == 1
    assert str(state / DB_NAME) in proc.stderr and "move the file aside" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_database_with_damaged_pages_is_a_clear_message(tmp_path: Path) -> None:
    """Corrupt pages inside a real database are found at start (quick_check), not later."""
    state = tmp_path / "state"
    store = Store(str(state), retention=86400.0)
    rows = [_row(f"dev-{i}") for i in range(3000)]
    store.write(rows, [])
    store.close()
    db = state / DB_NAME
    data = bytearray(db.read_bytes())
    assert len(data) > 40 * 4096
    data[20 * 4096 : 30 * 4096] = os.urandom(10 * 4096)
    db.write_bytes(bytes(data))
    proc = _collector_exit(tmp_path, state)
    assert proc.returncode == 1
    assert "is damaged" in proc.stderr and str(db) in proc.stderr
    assert "Traceback" not in proc.stderr


def _row(dev: str, **changes: object) -> tuple[object, ...]:
    values: dict[str, object] = dict.fromkeys(ROW_COLUMNS, 0)
    values.update(
        id=dev, state="up", addr="127.0.0.1:1", transport="udp", run="0" * 16, prev_run="",
        version="t", tags="{}", metrics="{}", counters="[0,0,0,0,0,0,0,0,0,0,0,0]",
    )  # fmt: skip
    values.update(changes)
    return tuple(values[c] for c in ROW_COLUMNS)


@pytest.mark.parametrize(
    "bad",
    [{"restarts": 2**70}, {"version": "\ud800"}],
    ids=["int-past-64-bits", "lone-surrogate"],
)
def test_a_row_sqlite_refuses_is_skipped_and_the_rest_written(
    tmp_path: Path, bad: dict[str, object]
) -> None:
    """One device row SQLite cannot take costs that row only, never the batch or the store."""
    store = Store(str(tmp_path / "s"), retention=86400.0)
    rows = [_row("a"), _row("bad", **bad), _row("c")]
    events = [{"time": time.time(), "device": "a", "from": None, "to": "up", "reason": "r"}]
    assert store.write(rows, events) == 1
    loaded, evs = store.load(time.time())
    ids = {r[0] for r in loaded}
    assert {"a", "c"} <= ids and "bad" not in ids
    assert len(evs) == 1
    assert store.skipped_rows == 1
    store.close()


def test_an_evicted_device_leaves_the_store_with_its_events(tmp_path: Path) -> None:
    """A device evicted to make room is deleted from the database at the next flush, so a
    restart does not bring it back."""
    from fleetbeat.collector.config import CollectorConfig
    from fleetbeat.collector.fleet import Fleet
    from fleetbeat.collector.service import Collector
    from fleetbeat.config import frozen as dataclasses
    from helpers import FakeClock

    section = dataclasses.replace(
        CollectorSection(), udp_listen="127.0.0.1:0", http_listen="127.0.0.1:0",
        state_dir=str(tmp_path / "state"), max_devices=2, evict_after=3600.0,
    )  # fmt: skip
    wall, mono = FakeClock(1_800_000_000.0), FakeClock(1000.0)
    col = Collector(CollectorConfig(collector=section), clock=wall)
    col.fleet = Fleet(section, clock=wall, monotonic=mono)
    col.start()
    try:
        sender = Sender(0)
        for dev in ("gone", "kept"):
            sender.dev = dev
            for seq in (0, 1):
                col.fleet.receive(wire.dumps(sender.message(seq, ts=wall.now)), ("10.0.0.1", 1))
        assert col.flush()
        assert set(stored_devices(tmp_path / "state")) == {"gone", "kept"}
        wall.now += 4000
        mono.now += 4000
        sender.dev = "kept"
        col.fleet.receive(wire.dumps(sender.message(2, ts=wall.now)), ("10.0.0.1", 1))
        sender.dev = "new"
        col.fleet.receive(wire.dumps(sender.message(0, ts=wall.now)), ("10.0.0.1", 1))
        assert col.flush()
        assert set(stored_devices(tmp_path / "state")) == {"kept"}  # "new": heard once
        assert "gone" not in {e["device"] for e in stored_events(tmp_path / "state")}
        sender.close()
    finally:
        col.close()
