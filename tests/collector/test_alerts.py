"""The alert engine: transitions, rules, loss and flapping become alerts, grouped into
notifications on Alertmanager's timers, suppressed by silences, maintenance and parents.
Every time is passed in: the tests are the clock."""

from __future__ import annotations

import datetime
from typing import Any

from alert_helpers import alerts_config, device, event, record

from fleetbeat.collector.alerts import Alerts
from fleetbeat.collector.alerts_config import MaintenanceSection, Match

BARN = ("pi-barn-01", "pi-barn-02", "pi-barn-07")
T0 = 1_764_000_000.0


def run(alerts: Alerts, start: float, end: float, step: float = 1.0) -> list[Any]:
    """Tick every `step` seconds from start to end; every notification that came out."""
    out = []
    t = start
    while t <= end:
        out.extend(alerts.tick(t))
        t += step
    return out


def barn(**cfg: Any) -> Alerts:
    a = Alerts(alerts_config(**cfg))
    a.evaluate([device(d, site="barn") for d in BARN], T0)
    return a


def down(a: Alerts, t: float, *devs: str) -> None:
    a.observe([event(t, d, "late", "down", "missed_heartbeats") for d in devs], t)


def up(a: Alerts, t: float, *devs: str) -> None:
    a.observe([event(t, d, "down", "up", "heartbeat") for d in devs], t)


def test_a_site_going_dark_is_one_notification():
    """Three barn devices down within group_wait: exactly one notification naming all three."""
    a = barn()
    down(a, T0 + 1, "pi-barn-07")
    down(a, T0 + 5, "pi-barn-01", "pi-barn-02")
    assert run(a, T0 + 1, T0 + 30) == []  # group_wait (30 s) from the first one
    (n,) = run(a, T0 + 31, T0 + 60)
    assert n.summary == "3 devices down at site=barn: pi-barn-01, pi-barn-02, pi-barn-07"
    assert n.status == "firing" and not n.reminder and n.group == {"site": "barn"}
    assert [(x["device"], x["kind"], x["new"]) for x in n.alerts] == [
        (d, "down", True) for d in BARN
    ]


def test_a_device_back_up_is_a_resolved_notification():
    """A device that comes back is told as back up, at the group's next interval."""
    a = barn(group_interval="1m")
    down(a, T0, *BARN)
    assert len(run(a, T0, T0 + 30)) == 1
    up(a, T0 + 40, "pi-barn-02")
    assert run(a, T0 + 40, T0 + 89) == []  # group_interval after the first notification
    (n,) = run(a, T0 + 90, T0 + 95)
    assert n.summary == "1 device back up at site=barn: pi-barn-02"
    assert n.status == "firing"  # the other two still are down
    states = {x["device"]: x["status"] for x in n.alerts}
    assert states == {"pi-barn-01": "firing", "pi-barn-02": "resolved", "pi-barn-07": "firing"}
    up(a, T0 + 100, "pi-barn-01", "pi-barn-07")
    (last,) = run(a, T0 + 100, T0 + 200)
    assert last.status == "resolved" and last.summary.startswith("2 devices back up")
    assert run(a, T0 + 200, T0 + 2000, 30) == []  # nothing left in the group


def test_send_resolved_false_keeps_quiet_about_ends():
    """With send_resolved = false nothing is sent when an alert ends."""
    a = barn(group_interval="1m", send_resolved=False)
    down(a, T0, "pi-barn-01")
    assert len(run(a, T0, T0 + 30)) == 1
    up(a, T0 + 40, "pi-barn-01")
    assert run(a, T0 + 40, T0 + 300) == []


def test_a_reminder_comes_after_repeat_interval():
    """While an alert lasts and nothing changes, a reminder goes out every repeat_interval."""
    a = barn(group_interval="1m", repeat_interval="10m")
    down(a, T0, "pi-barn-01", "pi-barn-02")
    (first,) = run(a, T0, T0 + 30)
    assert run(a, T0 + 31, T0 + 30 + 599, 10) == []
    (again,) = run(a, T0 + 30 + 600, T0 + 30 + 660, 10)
    assert again.reminder and again.status == "firing"
    assert again.summary == "Still: 2 devices down at site=barn: pi-barn-01, pi-barn-02"
    assert again.id != first.id


def test_group_interval_limits_later_changes():
    """A device going down just after a notification waits for the group's next interval."""
    a = barn(group_interval="5m")
    down(a, T0, "pi-barn-01")
    assert len(run(a, T0, T0 + 30)) == 1
    down(a, T0 + 40, "pi-barn-02")
    down(a, T0 + 100, "pi-barn-07")
    assert run(a, T0 + 40, T0 + 329) == []
    (n,) = run(a, T0 + 330, T0 + 340)
    assert n.summary == "2 devices down at site=barn: pi-barn-02, pi-barn-07"
    assert [x["new"] for x in n.alerts] == [False, True, True]


def test_groups_follow_group_by_and_untagged_devices_form_one():
    """Each site is its own notification; devices without the tag share one group."""
    a = Alerts(alerts_config())
    a.evaluate([device("a1", site="a"), device("b1", site="b"), device("x1"), device("x2")], T0)
    down(a, T0, "a1", "b1", "x1", "x2")
    found = sorted(n.summary for n in run(a, T0, T0 + 31))
    assert found == ["1 device down at site=a: a1", "1 device down at site=b: b1",
                     "2 devices down (no site tag): x1, x2"]  # fmt: skip


def test_an_alert_that_ends_within_group_wait_is_never_sent():
    """Down then up again before the group's first look: no notification at all."""
    a = barn()
    down(a, T0, "pi-barn-01")
    up(a, T0 + 10, "pi-barn-01")
    assert run(a, T0, T0 + 600, 5) == []


def test_a_device_down_again_before_its_end_was_told_simply_goes_on():
    """Down, up and down again within one group interval: no notification about it."""
    a = barn(group_interval="1m")
    down(a, T0, "pi-barn-01")
    assert len(run(a, T0, T0 + 30)) == 1
    up(a, T0 + 35, "pi-barn-01")
    down(a, T0 + 50, "pi-barn-01")
    assert run(a, T0 + 31, T0 + 300, 5) == []


def test_a_silence_stops_the_notification_but_not_the_alert():
    """A silenced device is not notified, stays active and marked; after the silence, it is."""
    a = barn(group_interval="1m")
    s = a.silences.add(Match(device="pi-barn-01"), T0 + 300, "fixing the PSU", T0)
    down(a, T0, "pi-barn-01", "pi-barn-02")
    (n,) = run(a, T0, T0 + 30)
    assert n.summary == "1 device down at site=barn: pi-barn-02"
    active = {x["device"]: x["suppressed"] for x in a.active(T0 + 31)}
    assert active["pi-barn-01"] == {"by": "silence", "id": s.id, "until": T0 + 300,
                                    "comment": "fixing the PSU"}  # fmt: skip
    assert active["pi-barn-02"] is None
    (later,) = run(a, T0 + 31, T0 + 400, 10)
    assert later.time >= T0 + 300 and later.summary == "1 device down at site=barn: pi-barn-01"


def test_a_tag_silence_covers_a_site():
    """A silence on site:barn keeps the whole barn quiet."""
    a = barn()
    a.silences.add(Match(tag=("site:barn",)), T0 + 3600, "", T0)
    down(a, T0, *BARN)
    assert run(a, T0, T0 + 600, 10) == []
    assert len(a.active(T0)) == 3


def test_a_maintenance_window_suppresses_on_schedule():
    """A weekly window (cron, UTC) keeps its devices quiet while open, not outside it."""
    sunday_0230 = datetime.datetime(2026, 11, 29, 2, 30, tzinfo=datetime.timezone.utc).timestamp()
    window = record(MaintenanceSection, {"name": "upgrades", "match": {"tag": "site:barn"},
                                         "start": "0 2 * * sun", "duration": "2h",
                                         "timezone": "UTC"})  # fmt: skip
    a = Alerts(alerts_config(), maintenance=[window])
    a.evaluate([device("pi-barn-01", site="barn"), device("pi-shed-01", site="shed")], sunday_0230)
    down(a, sunday_0230, "pi-barn-01", "pi-shed-01")
    found = run(a, sunday_0230, sunday_0230 + 60)
    assert [n.summary for n in found] == ["1 device down at site=shed: pi-shed-01"]
    (barn_alert,) = [x for x in a.active(sunday_0230) if x["device"] == "pi-barn-01"]
    assert barn_alert["suppressed"]["by"] == "maintenance"
    assert barn_alert["suppressed"]["until"] == sunday_0230 + 5400
    # the window closes at 04:00: the barn device, still down, is told then
    later = run(a, sunday_0230 + 61, sunday_0230 + 5400 + 300, 30)
    assert [n.summary for n in later] == ["1 device down at site=barn: pi-barn-01"]


def test_a_down_parent_suppresses_its_children():
    """Children of a down gateway are not notified; the gateway's line counts them."""
    a = Alerts(alerts_config())
    kids = [device(f"pi-barn-0{i}", site="barn", parent="gw-barn") for i in (1, 2, 3)]
    a.evaluate([device("gw-barn", site="barn"), *kids], T0)
    down(a, T0, "gw-barn", "pi-barn-01", "pi-barn-02", "pi-barn-03")
    (n,) = run(a, T0, T0 + 31)
    assert n.summary == "1 device down at site=barn: gw-barn (3 devices behind it)"
    assert n.alerts[0]["behind"] == 3
    suppressed = {x["device"]: x["suppressed"] for x in a.active(T0 + 31)}
    assert suppressed["pi-barn-01"] == {"by": "parent", "parent": "gw-barn"}


def test_a_metric_rule_alerts_after_its_for():
    """temp above 80 alerts once it has held for `for`, and resolves when it comes down."""
    a = Alerts(alerts_config(group_wait="0s", group_interval="10s",
                             rule=[{"name": "hot", "metric": "temp", "above": 80, "for": "5m",
                                    "severity": "critical"}]))  # fmt: skip

    def temp(t: float, value: float) -> None:
        a.evaluate([device("pi-1", site="barn", metrics={"temp": value})], t)

    notes = []
    for t in range(0, 300, 10):
        temp(T0 + t, 85.0)
        notes += a.tick(T0 + t)
    assert notes == []  # 290 s: not yet held for 5 min
    temp(T0 + 300, 86.5)
    (n,) = a.tick(T0 + 300)
    assert n.summary == "hot on 1 device at site=barn: pi-1 (86.5)"
    assert n.alerts[0]["severity"] == "critical" and n.alerts[0]["started"] == T0
    temp(T0 + 320, 70.0)
    (end,) = a.tick(T0 + 320)
    assert end.summary == "hot cleared on 1 device at site=barn: pi-1"


def test_a_rule_with_a_match_applies_only_there():
    """A rule with match = {tag = "site:barn"} ignores other sites' devices (first look)."""
    a = Alerts(alerts_config(group_wait="0s", rule=[{"name": "hot", "metric": "temp",
                                                     "below": 5, "match": {"tag": "site:barn"}}]))  # fmt: skip
    a.evaluate([device("pi-1", site="barn", metrics={"temp": 1.0}),
                device("pi-2", site="shed", metrics={"temp": 1.0})], T0)  # fmt: skip
    assert [x["device"] for x in a.active(T0)] == ["pi-1"]
    assert [n.summary for n in a.tick(T0)] == ["hot on 1 device at site=barn: pi-1 (1)"]


def test_flapping_is_one_alert_not_many():
    """Eleven quick up/down changes make one flapping notification and no down/up ones."""
    a = barn(flapping=6, flapping_window="10m", group_interval="1m")
    notes = []
    for i in range(11):  # ends down
        if i % 2 == 0:
            down(a, T0 + i, "pi-barn-01")
        else:
            up(a, T0 + i, "pi-barn-01")
        notes += a.tick(T0 + i)
    notes += run(a, T0 + 11, T0 + 99, 5)
    assert [n.summary for n in notes] == ["1 device flapping at site=barn: pi-barn-01"]
    assert {x["kind"]: x["suppressed"] for x in a.active(T0 + 99)} == {
        "down": {"by": "flapping"}, "flapping": None}  # fmt: skip
    up(a, T0 + 100, "pi-barn-01")
    # stable (up) for a whole window from its last change: stable again
    later = run(a, T0 + 100, T0 + 1300, 5)
    assert [n.summary for n in later] == ["1 device stable again at site=barn: pi-barn-01"]
    assert later[0].time >= T0 + 700


def test_a_restart_loop_is_one_flapping_alert():
    """Seven reboots within a minute: one flapping notification, not seven reboots."""
    a = barn(flapping=6)
    a.observe([event(T0 + i, "pi-barn-01", "up", "up", "reboot") for i in range(7)], T0 + 7)
    notes = run(a, T0 + 7, T0 + 600, 5)
    assert [n.summary for n in notes] == ["1 device flapping at site=barn: pi-barn-01"]


def test_the_fleets_flapping_event_raises_the_flapping_alert():
    """A "flapping" event (the fleet stopped logging a device's events) is a flapping alert."""
    a = barn()
    a.observe([event(T0, "pi-barn-01", "up", "down", "flapping")], T0)
    (n,) = run(a, T0, T0 + 31)
    assert n.summary == "1 device flapping at site=barn: pi-barn-01"


def test_high_loss_alerts_after_loss_for():
    """Recent loss above loss_above for loss_for is a loss alert (when "loss" is on)."""
    a = Alerts(alerts_config(on=["loss"], loss_above=10.0, loss_for="1m", group_wait="0s"))
    a.evaluate([device("pi-1", site="barn", loss=35.0)], T0)
    assert a.tick(T0) == []
    a.evaluate([device("pi-1", site="barn", loss=35.0)], T0 + 60)
    (n,) = a.tick(T0 + 60)
    assert n.summary == "1 device losing heartbeats at site=barn: pi-1 (35)"


def test_a_reboot_is_told_once_and_never_resolved():
    """A reboot is a one-off: one notification, then nothing, and no longer active."""
    a = barn(group_interval="1m")
    a.observe([event(T0, "pi-barn-01", "up", "up", "reboot")], T0)
    (n,) = run(a, T0, T0 + 31)
    assert n.summary == "1 device rebooted at site=barn: pi-barn-01"
    assert run(a, T0 + 32, T0 + 3600, 30) == []
    assert a.active(T0 + 32) == []


def test_kinds_not_on_do_not_alert():
    """A restart is not alerted by default; "offline" neither."""
    a = barn()
    a.observe([event(T0, "pi-barn-01", "up", "up", "restart"),
               event(T0, "pi-barn-02", "up", "offline", "bye")], T0)  # fmt: skip
    assert a.active(T0) == [] and run(a, T0, T0 + 60) == []


def test_silent_through_a_restart_is_missing():
    """Down because it stayed silent while the collector was away is a "missing" alert."""
    a = barn()
    a.observe([event(T0, "pi-barn-01", "up", "down", "silent_through_restart")], T0)
    (n,) = run(a, T0, T0 + 31)
    assert n.alerts[0]["kind"] == "missing"
    assert n.summary == "1 device missing at site=barn: pi-barn-01"


def test_devices_reconcile_state_alerts_without_events():
    """A device the fleet says is down raises a down alert; up again, it resolves."""
    a = Alerts(alerts_config(group_wait="0s", group_interval="1s"))
    a.evaluate([device("pi-1", "down", since=T0 - 100, site="barn")], T0)
    (n,) = a.tick(T0)
    assert n.alerts[0]["started"] == T0 - 100
    a.evaluate([device("pi-1", "up", since=T0 + 5, site="barn")], T0 + 5)
    (end,) = a.tick(T0 + 5)
    assert end.status == "resolved"


def test_a_device_that_left_the_fleet_resolves_as_such_and_gets_no_reminders():
    """A device no longer in the fleet (evicted, released) leaves no alert and gets no
    reminders: its told down alert resolves "no longer tracked", not "back up"."""
    a = barn(group_interval="1m", repeat_interval="10m")
    down(a, T0, "pi-barn-01", "pi-barn-02")
    assert len(run(a, T0, T0 + 30)) == 1
    a.evaluate([device("pi-barn-02", "down", since=T0, site="barn")], T0 + 40)
    assert [x["device"] for x in a.active(T0 + 40)] == ["pi-barn-02"]
    gone, reminder = run(a, T0 + 40, T0 + 700, 10)
    assert gone.summary == "1 device no longer tracked at site=barn: pi-barn-01"
    (told,) = [x for x in gone.alerts if x["device"] == "pi-barn-01"]
    assert (told["status"], told["resolved_reason"], told["resolved"]) == (
        "resolved", "no longer tracked", T0 + 40)  # fmt: skip
    assert reminder.summary == "Still: 1 device down at site=barn: pi-barn-02"


def test_an_older_device_snapshot_does_not_undo_a_newer_event():
    """A devices list taken before an event does not resolve the alert that event started."""
    a = barn(group_wait="0s")
    down(a, T0 + 10, "pi-barn-01")
    a.evaluate([device("pi-barn-01", "up", since=T0, site="barn")], T0 + 11)
    assert [x["device"] for x in a.active(T0 + 11)] == ["pi-barn-01"]


def test_active_lists_most_severe_first():
    """active() orders by severity, then by start time."""
    a = barn(on=["down", "reboot"])
    a.observe([event(T0, "pi-barn-01", "up", "up", "reboot")], T0)
    down(a, T0 + 5, "pi-barn-02")
    assert [(x["kind"], x["severity"]) for x in a.active(T0 + 6)] == [
        ("down", "critical"), ("reboot", "warning")]  # fmt: skip


def test_a_device_newer_than_the_devices_list_keeps_its_alert():
    """An alert for a device the last devices list did not know yet is not taken as forgotten."""
    a = barn(group_wait="0s")
    a.observe([event(T0, "pi-new", None, "up", "first_seen"),
               event(T0 + 1, "pi-new", "up", "up", "reboot")], T0 + 1)  # fmt: skip
    a.evaluate([device(d, site="barn") for d in BARN], T0 + 1)  # taken before pi-new came
    assert [n.summary for n in a.tick(T0 + 2)] == ["1 device rebooted (no site tag): pi-new"]
