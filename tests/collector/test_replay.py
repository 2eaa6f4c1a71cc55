"""Replays of validly signed messages, as a hostile reviewer found them: each is refused.

In-process, with injected clocks: a real Fleet, a real Keyring, real store rows for the
restart cases.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fleetbeat import keys, wire
from fleetbeat.collector.auth import Keyring
from fleetbeat.collector.config import CollectorSection
from fleetbeat.collector.fleet import Fleet
from fleetbeat.config import frozen
from fleetbeat.hmac_sha256 import HmacSha256
from helpers import FakeClock

KEY = bytes(range(32))
MAC = HmacSha256(KEY)
T0 = 1_800_000_000.0
RUN = "0123456789abcdef"


def _fleet(tmp_path: Path, **config: Any) -> tuple[Fleet, FakeClock, FakeClock]:
    d = tmp_path / "keys"
    d.mkdir(exist_ok=True)
    keys.write_key_file(str(d / "pi"), KEY.hex(), overwrite=True)
    ring = Keyring(keys_dir=str(d))
    ring.load()
    wall, mono = FakeClock(T0), FakeClock(1000.0)
    fleet = Fleet(frozen.replace(CollectorSection(), **config), clock=wall, monotonic=mono)
    fleet.use_keyring(ring)
    return fleet, wall, mono


def _msg(seq: int, kind: str = "hb", run: str = RUN, ts: float = T0) -> bytes:
    m: dict[str, Any] = {"v": 1, "k": kind, "dev": "pi", "run": run, "seq": seq, "ts": ts}
    if kind == "hb":
        m["int"] = 1.0
    if kind == "rd":
        m.update(src="s", m={"x": seq})
    return wire.sign(wire.dumps(m), MAC)


def _tick(wall: FakeClock, mono: FakeClock, s: float) -> None:
    wall.now += s
    mono.now += s


def _replays(fleet: Fleet) -> int:
    return int(fleet.stats()["rejected"].get("replay", 0))


def test_a_run_older_than_those_remembered_cannot_start_again(tmp_path: Path) -> None:
    """After a crash loop of more runs than OLD_RUNS, a captured heartbeat of the first run
    is still refused (its clock is not past the device's last heartbeat), and the real run
    goes on."""
    fleet, wall, mono = _fleet(tmp_path)
    runs = [f"{0xA0 + i:016x}" for i in range(12)]
    captured = {}
    for run in runs:
        for seq in (1, 2, 3):
            _tick(wall, mono, 10)
            captured[run, seq] = _msg(seq, run=run, ts=wall.now)
            fleet.receive(captured[run, seq], ("10.0.0.1", 1))
    _tick(wall, mono, 10)
    fleet.receive(captured[runs[0], 1], ("6.6.6.6", 1))
    fleet.receive(captured[runs[0], 2], ("6.6.6.6", 1))
    assert _replays(fleet) == 2
    d = fleet.device("pi")
    assert d is not None and d["run"] == runs[-1] and d["addr"] == "10.0.0.1:1"
    fleet.receive(_msg(4, run=runs[-1], ts=wall.now), ("10.0.0.1", 1))
    assert _replays(fleet) == 2  # the genuine device is not locked out


def _restart(fleet: Fleet, tmp_path: Path, wall: FakeClock, mono: FakeClock) -> Fleet:
    rows, events = fleet.take_changes()
    again, _, _ = _fleet(tmp_path)
    again._clock, again._mono = wall, mono  # the same clocks, as after a quick restart
    again.restore(rows, events)
    return again


def test_after_a_collector_restart_old_seqs_stay_replays(tmp_path: Path) -> None:
    """Stored state is enough: after a restart and a fresh heartbeat, seqs accepted before
    (heartbeats and readings) are replays and do not keep a dead device up."""
    fleet, wall, mono = _fleet(tmp_path)
    captured = []
    for seq in range(10):
        _tick(wall, mono, 1)
        captured.append(_msg(seq, ts=wall.now))
        fleet.receive(captured[-1], ("10.0.0.1", 1))
        fleet.receive(_msg(seq, kind="rd", ts=wall.now), ("10.0.0.1", 1))
    fleet = _restart(fleet, tmp_path, wall, mono)
    _tick(wall, mono, 1)
    fleet.receive(_msg(10, ts=wall.now), ("10.0.0.1", 1))  # one fresh heartbeat
    for old in captured[5:8]:
        fleet.receive(old, ("6.6.6.6", 1))
    for seq in (5, 6, 7):
        fleet.receive(_msg(seq, kind="rd", ts=T0 + seq), ("6.6.6.6", 1))
    assert _replays(fleet) == 6
    d = fleet.device("pi")
    assert d is not None and d["readings_received"] == 10 and d["addr"] == "10.0.0.1:1"


def test_an_evicted_device_cannot_be_brought_back_by_an_old_capture(tmp_path: Path) -> None:
    """A device evicted (long silent) is a stranger again: a signed message from a run
    captured long ago is refused as a replay, not a new device."""
    fleet, wall, mono = _fleet(tmp_path, max_devices=1, evict_after=3600.0)
    old = [_msg(seq, run="00000000000000aa", ts=wall.now) for seq in (0, 1)]
    for m in old:
        fleet.receive(m, ("10.0.0.1", 1))
    _tick(wall, mono, 8 * 86400)
    for seq in (0, 1):
        fleet.receive(wire.dumps({"v": 1, "k": "hb", "dev": "junk", "run": RUN, "seq": seq,
                                  "ts": wall.now, "int": 1.0}), ("7.7.7.7", 1))  # fmt: skip
    assert fleet.device("pi") is None
    for m in old:
        fleet.receive(m, ("6.6.6.6", 1))
    assert fleet.device("pi") is None and _replays(fleet) == 2


def test_a_forgotten_device_cannot_be_brought_back_by_its_captured_heartbeats(
    tmp_path: Path,
) -> None:
    """A device retired and forgotten a minute after its last heartbeat: two of its captured
    signed heartbeats sent again from elsewhere (within the stranger's hour) are replays,
    and it stays gone; the same after a collector restart (the forget time comes back from
    the stored `forgotten` event); a heartbeat with a clock past the forget is a new device."""
    fleet, wall, mono = _fleet(tmp_path)
    captured = [_msg(s, ts=T0 + s) for s in range(10)]
    for m in captured:
        fleet.receive(m, ("10.0.0.5", 1))
        _tick(wall, mono, 1)
    _tick(wall, mono, 60)
    assert fleet.forget("pi") and fleet.device("pi") is None
    _tick(wall, mono, 120)
    fleet.receive(captured[8], ("10.0.0.66", 1))
    fleet.receive(captured[9], ("10.0.0.66", 1))
    assert fleet.device("pi") is None and _replays(fleet) == 2
    fleet = _restart(fleet, tmp_path, wall, mono)
    _tick(wall, mono, 60)
    fleet.receive(captured[8], ("10.0.0.66", 1))
    fleet.receive(captured[9], ("10.0.0.66", 1))
    assert fleet.device("pi") is None and _replays(fleet) == 2
    fleet.receive(_msg(0, run="fedcba9876543210", ts=wall.now), ("10.0.0.5", 1))
    fleet.receive(_msg(1, run="fedcba9876543210", ts=wall.now), ("10.0.0.5", 1))
    d = fleet.device("pi")
    assert d is not None and d["state"] == "up" and d["received"] == 2


def test_a_genuine_restart_and_a_new_device_are_accepted(tmp_path: Path) -> None:
    """The rules refuse replays, not life: a restart with a later clock starts its run, and a
    new device whose clock is within the hour is admitted."""
    fleet, wall, mono = _fleet(tmp_path)
    fleet.receive(_msg(0, ts=wall.now - 1800), ("10.0.0.1", 1))
    fleet.receive(_msg(1, ts=wall.now - 1799), ("10.0.0.1", 1))
    _tick(wall, mono, 5)
    fleet.receive(_msg(0, run="fedcba9876543210", ts=wall.now - 1790), ("10.0.0.1", 1))
    d = fleet.device("pi")
    assert d is not None and d["run"] == "fedcba9876543210" and d["restarts"] == 1
    assert _replays(fleet) == 0
