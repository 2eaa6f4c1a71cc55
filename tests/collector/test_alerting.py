"""The alert side of the collector's main loop: the events it hears, its health, reload, stop."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from collector_helpers import stored_events

from fleetbeat import wire
from fleetbeat.collector.config import parse_collector_config
from fleetbeat.collector.outbox import Outbox
from fleetbeat.collector.service import Collector
from fleetbeat.collector.store import StoreError
from fleetbeat.collector.suppress import parse_silence
from helpers import wait_until

TOML = """
[collector]
udp_listen = "127.0.0.1:0"
http_listen = "127.0.0.1:0"
state_dir = "{state}"
down_after = 3
{collector}
[collector.alerts]
group_wait = "{wait}"
"""


def config_file(tmp_path: Path, wait: str = "30s", extra: str = "", collector: str = "") -> Path:
    path = tmp_path / "collector.toml"
    path.write_text(TOML.format(state=tmp_path / "state", wait=wait, collector=collector) + extra)
    return path


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[Collector]:
    """A started in-process collector on kernel-picked ports; alerting.observe recorded."""
    from fleetbeat.collector.config import load_collector_config

    c = Collector(load_collector_config(str(config_file(tmp_path))))
    c.start()
    assert c.alerting is not None
    c.seen = []  # type: ignore[attr-defined]
    observe = c.alerting.observe

    def record(events: Any) -> None:
        c.seen.extend(events)  # type: ignore[attr-defined]
        observe(events)

    c.alerting.observe = record  # type: ignore[method-assign]
    yield c
    c.close()


def heartbeats(c: Collector, dev: str, n: int = 2) -> None:
    for seq in range(n):
        msg = {"v": 1, "k": "hb", "dev": dev, "run": "0123456789abcdef", "seq": seq,
               "ts": time.time(), "int": 1, "bt": 1764000000, "tags": {"site": "barn"}}  # fmt: skip
        c.fleet.receive(wire.dumps(msg), ("127.0.0.1", 4000))


def downs(c: Collector) -> list[dict[str, Any]]:
    return [e for e in c.seen if e["to"] == "down"]  # type: ignore[attr-defined]


def test_a_failed_store_write_does_not_tell_the_alerts_twice(
    collector: Collector, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The events of a write that failed go to the alerts once, and to the store on the retry;
    meanwhile the collector is not healthy for the dead man's switch."""
    c = collector
    heartbeats(c, "pi-barn-01")
    assert c.flush() and c.healthy()
    store = c.store
    assert store is not None
    write = store.write

    def full(*_: Any) -> None:
        raise StoreError("disk full")

    monkeypatch.setattr(store, "write", full)
    c.fleet.check(time.monotonic() + 10)
    assert not c.flush()
    assert len(downs(c)) == 1 and not c.healthy()
    heartbeats(c, "pi-barn-02")  # a new event arrives while the store fails
    assert not c.flush()
    monkeypatch.setattr(store, "write", write)
    assert c.flush() and c.healthy()
    assert len(downs(c)) == 1
    assert [e["device"] for e in c.seen].count("pi-barn-02") == 1  # type: ignore[attr-defined]
    active = {(a["kind"], a["device"]) for a in c.alerting.active()[1]}  # type: ignore[union-attr]
    assert active == {("down", "pi-barn-01")}


def reboot(c: Collector, dev: str) -> None:
    msg = {"v": 1, "k": "hb", "dev": dev, "run": "fedcba9876543210", "seq": 0,
           "ts": time.time() + 5, "int": 1, "bt": 1764100000, "tags": {"site": "barn"}}  # fmt: skip
    c.fleet.receive(wire.dumps(msg), ("127.0.0.1", 4000))


def test_a_forget_while_the_store_fails_hides_no_other_event_from_the_alerts(
    collector: Collector, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A device forgotten while its events wait for a failed write: the alerts still hear
    every other device's event exactly once (a reboot alert is not lost), and the
    forgotten device's events once each."""
    c = collector
    heartbeats(c, "pi-x")
    assert c.flush()
    store = c.store
    assert store is not None
    write = store.write

    def full(*_: Any) -> None:
        raise StoreError("disk full")

    monkeypatch.setattr(store, "write", full)
    c.fleet.check(time.monotonic() + 1.6)  # pi-x late: heard, the write fails
    assert not c.flush()
    c.fleet.check(time.monotonic() + 10)  # pi-x down
    assert not c.flush()
    heartbeats(c, "pi-y")
    reboot(c, "pi-y")
    assert c.fleet.forget("pi-x")  # DELETE /api/devices/pi-x meanwhile
    monkeypatch.setattr(store, "write", write)
    assert c.flush()
    seen = c.seen  # type: ignore[attr-defined]
    heard_y = [(e["to"], e["reason"]) for e in seen if e["device"] == "pi-y"]
    assert heard_y == [("up", "first_seen"), ("up", "reboot")]
    assert [e["to"] for e in seen if e["device"] == "pi-x"] == ["up", "late", "down", "forgotten"]
    c.alerting.turn()  # type: ignore[union-attr]
    active = {(a["kind"], a["device"]) for a in c.alerting.active()[1]}  # type: ignore[union-attr]
    assert ("reboot", "pi-y") in active


def test_a_forget_during_the_failing_write_hides_no_later_event_from_the_alerts(
    collector: Collector, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The DELETE lands while the failing write runs (the HTTP thread): the events logged
    after it still reach the alerts, each once."""
    c = collector
    heartbeats(c, "pi-x")
    assert c.flush()
    store = c.store
    assert store is not None
    write = store.write

    def full(*_: Any) -> None:
        c.fleet.forget("pi-x")
        raise StoreError("disk full")

    c.fleet.check(time.monotonic() + 1.6)
    c.fleet.check(time.monotonic() + 10)
    monkeypatch.setattr(store, "write", full)
    assert not c.flush()
    monkeypatch.setattr(store, "write", write)
    heartbeats(c, "pi-y")
    reboot(c, "pi-y")
    assert c.flush()
    seen = c.seen  # type: ignore[attr-defined]
    assert [(e["to"], e["reason"]) for e in seen if e["device"] == "pi-y"] == [
        ("up", "first_seen"), ("up", "reboot"),
    ]  # fmt: skip
    assert [e["to"] for e in seen if e["device"] == "pi-x"] == ["up", "late", "down", "forgotten"]


def test_a_database_recreated_under_the_collector_tells_the_alerts_nothing_again(
    collector: Collector,
) -> None:
    """Deleting fleetbeat.db makes the store rewrite every event; the alerts hear none again."""
    c = collector
    heartbeats(c, "pi-barn-01")
    c.fleet.check(time.monotonic() + 10)
    assert c.flush()
    before = list(c.seen)  # type: ignore[attr-defined]
    assert c.store is not None
    os.unlink(c.store.path)
    heartbeats(c, "pi-barn-02")
    assert c.flush()
    new = c.seen[len(before) :]  # type: ignore[attr-defined]
    assert [e["device"] for e in new] == ["pi-barn-02"], new


def test_a_judged_device_is_written_and_alerted_without_waiting_for_the_flush_interval(
    tmp_path: Path,
) -> None:
    """A running collector with flush_interval 1h writes a device judged down within a
    second, and alerts on it (at scale the alerts hear of it first through that write)."""
    from fleetbeat.collector.config import load_collector_config

    path = config_file(tmp_path, collector='flush_interval = "1h"\ncheck_interval = "0.01s"')
    c = Collector(load_collector_config(str(path)))
    found: list[dict[str, Any]] = []
    failed: list[BaseException] = []

    def watch() -> None:  # the loop runs in this (the main) thread: it sets signal handlers
        try:
            wait_until(lambda: c.alerting is not None and c.http is not None)
            for seq in range(2):
                msg = {"v": 1, "k": "hb", "dev": "pi-1", "run": "0123456789abcdef", "seq": seq,
                       "ts": time.time(), "int": 0.1, "bt": 1764000000}  # fmt: skip
                c.fleet.receive(wire.dumps(msg), ("127.0.0.1", 4000))
            alerting = c.alerting
            assert alerting is not None
            found.extend(wait_until(lambda: [a for a in alerting.active()[1]
                                             if a["device"] == "pi-1"]))  # fmt: skip
            state = tmp_path / "state"
            wait_until(lambda: [e for e in stored_events(state) if e["to"] == "down"], 2)
        except BaseException as exc:  # the main thread reports it
            failed.append(exc)
        finally:
            c.request_stop()

    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT,
                                                        signal.SIGHUP)}  # fmt: skip
    helper = threading.Thread(target=watch, daemon=True)
    helper.start()
    try:
        assert c.run() == 0
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        helper.join(10)
    assert not failed, failed
    assert [a["kind"] for a in found] == ["down"]


def test_a_reload_applies_the_alert_settings_and_says_what_needs_a_restart(
    collector: Collector, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """SIGHUP's reload: a new group_wait applies at once; a new notifier is logged as needing
    a restart."""
    path = config_file(tmp_path, wait="7s", extra='\n[[collector.notify]]\ntype = "webhook"\n'
                       'url = "http://127.0.0.1:9/hook"\n')  # fmt: skip
    with caplog.at_level(logging.WARNING):
        collector._apply_file(str(path))
    assert collector.alerting is not None
    assert collector.alerting.alerts.config.group_wait == 7.0
    assert "notify changed: restart the collector" in caplog.text
    assert collector.alerting.stats()["notifications"] == {}  # the running set is unchanged


def test_silences_are_kept_when_the_collector_stops(collector: Collector) -> None:
    """A silence made through the API side is in alerts.db after close()."""
    assert collector.alerting is not None
    match, until, comment = parse_silence({"tag": "site:barn", "duration": "1h",
                                           "comment": "rewiring"}, time.time())  # fmt: skip
    made = collector.alerting.add_silence(match, until, comment, time.time())
    state = collector.config.collector.state_dir
    collector.close()
    box = Outbox(state)
    try:
        assert [s.id for s in box.silences().list(time.time())] == [made.id]
    finally:
        box.close()


def test_the_token_is_created_at_first_start_mode_0600(collector: Collector) -> None:
    """{state_dir}/api-token exists after start, readable by the owner only."""
    path = Path(collector.config.collector.state_dir) / "api-token"
    assert path.stat().st_mode & 0o777 == 0o600
    assert len(path.read_text().strip()) >= 40


def test_the_api_token_file_key_is_where_the_token_goes(tmp_path: Path) -> None:
    """api_token_file in [collector] names the token's file."""
    from fleetbeat.collector.config import api_token_path

    section = parse_collector_config(
        {"collector": {"state_dir": str(tmp_path), "api_token_file": "/etc/fb/token"}}, "t"
    ).collector
    assert api_token_path(section) == "/etc/fb/token"
    default = parse_collector_config({"collector": {"state_dir": str(tmp_path)}}, "t").collector
    assert api_token_path(default) == str(tmp_path / "api-token")


def test_a_failing_alert_engine_stops_neither_the_store_nor_the_loop(
    collector: Collector, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exception inside the engine is logged; the events still reach the store."""
    assert collector.alerting is not None

    def broken(*_: Any) -> None:
        raise RuntimeError("engine bug")

    monkeypatch.setattr(collector.alerting.alerts, "observe", broken)
    monkeypatch.setattr(collector.alerting.alerts, "tick", broken)
    heartbeats(collector, "pi-barn-01")
    collector.fleet.check(time.monotonic() + 10)
    assert collector.flush()
    collector.alerting.turn()
    state = Path(collector.config.collector.state_dir)
    assert [e["to"] for e in stored_events(state) if e["device"] == "pi-barn-01"][-1] == "down"
