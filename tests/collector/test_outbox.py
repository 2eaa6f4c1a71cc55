"""The outbox: pending notifications and silences survive a restart; retries end in time."""

from __future__ import annotations

import logging
import sqlite3

import pytest
from alert_helpers import Hook
from test_notifiers import T0, barn_notification, notifiers, pump_until

from fleetbeat.collector.alerts_config import Match
from fleetbeat.collector.outbox import DB_NAME, Dispatcher, Outbox
from helpers import FakeClock


@pytest.fixture
def hook():
    h = Hook((500,))
    yield h
    h.close()


def test_a_pending_notification_is_delivered_after_a_restart(tmp_path, hook):
    """Failing when the collector stops, a notification is sent by the next one, then gone."""
    clock = FakeClock(T0)
    table = {"type": "webhook", "url": hook.url}
    box = Outbox(str(tmp_path))
    d = Dispatcher(notifiers(table), box, clock=clock, rng=lambda: 0.5)
    n = barn_notification()
    d.submit(n)
    pump_until(d, clock, lambda: d.stats()["notifications"]["webhook"]["failed"])
    d.close()
    box.close()  # the collector stops; the receiver comes back
    hook.statuses[:] = [200]
    box = Outbox(str(tmp_path))
    d = Dispatcher(notifiers(table), box, clock=clock, rng=lambda: 0.5)
    assert d.stats()["pending"] == {"webhook": 1}
    pump_until(d, clock, lambda: d.stats()["pending"]["webhook"] == 0)
    assert [b["id"] for b in hook.bodies()] == [n.id, n.id]
    d.close()
    box.close()
    box = Outbox(str(tmp_path))  # once seen delivered, never again
    assert box.pending() == []
    box.close()


def test_retries_stop_after_give_up_after(tmp_path, hook, caplog):
    """A notifier failing past give_up_after gives the notification up, as a logged error."""
    clock = FakeClock(T0)
    box = Outbox(str(tmp_path))
    d = Dispatcher(notifiers({"type": "webhook", "url": hook.url, "give_up_after": "2m"}), box,
                   clock=clock, rng=lambda: 0.5)  # fmt: skip
    with caplog.at_level(logging.ERROR):
        d.submit(barn_notification())
        pump_until(d, clock, lambda: d.stats()["notifications"]["webhook"]["gave_up"], step=20)
    counts = d.stats()["notifications"]["webhook"]
    assert counts["sent"] == 0 and counts["failed"] >= 1 and counts["gave_up"] == 1
    assert "notifier webhook: gave up on notification" in caplog.text
    assert box.pending() == [] and d.stats()["pending"] == {"webhook": 0}
    d.close()
    box.close()


def test_a_notifier_no_longer_configured_has_its_pending_dropped(tmp_path, caplog):
    """After a restart without that notifier, its pending rows are dropped with a warning."""
    box = Outbox(str(tmp_path))
    box.put("old-hook", barn_notification(), T0)
    d = Dispatcher([], box)
    assert box.pending() == [] and "no longer configured" in caplog.text
    d.close()
    box.close()


def test_silences_survive_a_restart(tmp_path):
    """Silences written from take_changes() come back after reopening; removed ones do not."""
    box = Outbox(str(tmp_path))
    s = box.silences()
    keep = s.add(Match(device="pi-1"), T0 + 3600, "PSU", T0)
    gone = s.add(Match(tag=("site:barn",)), T0 + 3600, "", T0)
    box.save_silences(s.take_changes())
    s.remove(gone.id)
    box.save_silences(s.take_changes())
    box.close()
    box = Outbox(str(tmp_path))
    assert box.silences().list(T0) == [keep]
    box.close()


def test_a_newer_schema_is_refused(tmp_path):
    """A database from a newer fleetbeat is not used (nor changed)."""
    db = sqlite3.connect(tmp_path / DB_NAME)
    db.execute("PRAGMA user_version = 99")
    db.close()
    from fleetbeat.collector.outbox import OutboxError

    with pytest.raises(OutboxError, match="schema version 99"):
        Outbox(str(tmp_path))


def test_notified_alerts_survive_a_restart(tmp_path):
    """Alerts told before a restart are not told again, and their end is told after it."""
    from alert_helpers import alerts_config, device, event

    from fleetbeat.collector.alerts import Alerts

    cfg = alerts_config(group_wait="0s", group_interval="10s")
    a = Alerts(cfg)
    a.evaluate([device("pi-1", site="barn"), device("pi-2", site="barn")], T0)
    a.observe([event(T0, d, "late", "down", "missed_heartbeats") for d in ("pi-1", "pi-2")], T0)
    assert len(a.tick(T0)) == 1
    box = Outbox(str(tmp_path))
    box.save_alerts(a.take_told())
    assert a.take_told() is None  # nothing changed since
    box.close()
    box = Outbox(str(tmp_path))  # the restarted collector
    b = Alerts(cfg)
    assert b.restore(box.alerts(), T0 + 100) == 2
    box.close()
    b.evaluate([device("pi-1", "down", since=T0, site="barn"),
                device("pi-2", "down", since=T0, site="barn")], T0 + 100)  # fmt: skip
    assert b.tick(T0 + 120) == []  # still down: already told
    b.observe([event(T0 + 130, "pi-1", "down", "up", "heartbeat")], T0 + 130)
    (n,) = b.tick(T0 + 140)
    assert n.summary == "1 device back up at site=barn: pi-1"


def test_an_unwritable_outbox_still_lets_notifications_out(tmp_path, hook, caplog):
    """With the database gone read-only, a notification is still sent, and the error logged."""
    clock = FakeClock(T0)
    hook.statuses[:] = [200]
    box = Outbox(str(tmp_path))
    d = Dispatcher(notifiers({"type": "webhook", "url": hook.url}), box, clock=clock)
    box._db.execute("PRAGMA query_only = ON")  # every write fails from now on
    d.submit(barn_notification())
    pump_until(d, clock, lambda: d.stats()["notifications"]["webhook"]["sent"])
    assert "notifications go on, in memory only" in caplog.text
    d.close()
    box.close()
