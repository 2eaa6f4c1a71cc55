"""Cron expressions, maintenance windows and silences."""

from __future__ import annotations

import datetime

import pytest
from alert_helpers import record

from fleetbeat.collector.alerts_config import MaintenanceSection, Match
from fleetbeat.collector.cron import Cron, CronError
from fleetbeat.collector.suppress import Silences, Window, parse_silence
from fleetbeat.errors import InputError

UTC = datetime.timezone.utc


def at(*args: int) -> datetime.datetime:
    return datetime.datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(("text", "error"), [
    ("0 2 * *", "expected 5 fields"),
    ("60 2 * * *", "minute: '60': 60 is outside 0-59"),
    ("0 2 * * funday", "day of week: 'funday'"),
    ("0 5-2 * * *", "runs backwards"),
    ("*/0 * * * *", "a step must be 1 or more"),
])  # fmt: skip
def test_bad_cron_expressions_say_what_is_wrong(text, error):
    """Each malformed expression is refused with the field and the reason."""
    with pytest.raises(CronError, match=error):
        Cron(text)


def test_latest_start_finds_the_last_matching_minute():
    """Sunday 02:30 weekly: found from within the window, not from beyond the lookback."""
    c = Cron("30 2 * * sun")
    week = datetime.timedelta(days=7)
    assert c.latest_start(at(2026, 11, 29, 3, 0), week) == at(2026, 11, 29, 2, 30)
    assert c.latest_start(at(2026, 12, 2, 12, 0), week) == at(2026, 11, 29, 2, 30)
    assert c.latest_start(at(2026, 12, 2, 12, 0), datetime.timedelta(hours=2)) is None


def test_lists_ranges_steps_and_names():
    """mon-fri at */15 past 22h matches a weekday 22:45, not a Saturday."""
    c = Cron("*/15 22 * jan-dec mon-fri")
    assert c.latest_start(at(2026, 12, 1, 22, 50), datetime.timedelta(minutes=10)) == at(
        2026, 12, 1, 22, 45)  # fmt: skip
    assert c.latest_start(at(2026, 12, 5, 22, 50), datetime.timedelta(hours=1)) is None


def test_day_of_month_or_weekday_as_cron_does():
    """With both day fields restricted, either one matching is enough (Vixie cron)."""
    c = Cron("0 0 1 * mon")
    assert c.day_matches(datetime.date(2026, 12, 1))  # the 1st, a Tuesday
    assert c.day_matches(datetime.date(2026, 12, 7))  # a Monday
    assert not c.day_matches(datetime.date(2026, 12, 8))


def test_a_window_opens_and_closes_on_time():
    """A 2 h window from Sunday 02:00 UTC is open at 02:00 and 03:59, closed at 04:00."""
    w = Window(record(MaintenanceSection, {"name": "w", "match": {"device": "pi-*"},
                                           "start": "0 2 * * sun", "duration": "2h",
                                           "timezone": "UTC"}))  # fmt: skip
    start = at(2026, 11, 29, 2, 0).timestamp()
    assert w.open_until(start - 1) is None
    assert w.open_until(start) == start + 7200
    assert w.open_until(start + 7199) == start + 7200
    assert w.open_until(start + 7200) is None
    assert w.covers("pi-1", {}, start) == start + 7200
    assert w.covers("gw-1", {}, start) is None


def test_silences_expire_and_report_their_changes():
    """A silence matches until it ends; adds and ends are handed over for storage once."""
    s = Silences()
    one = s.add(Match(tag=("site:barn",)), 200.0, "PSU swap", 100.0)
    assert s.find("pi-1", {"site": "barn"}, 150.0) == one
    assert s.find("pi-1", {"site": "shed"}, 150.0) is None
    assert s.take_changes() == {one.id: one}
    assert s.take_changes() == {}
    assert s.list(250.0) == []
    assert s.take_changes() == {one.id: None}
    assert not s.remove(one.id)


def test_a_silence_must_name_something_and_end_later():
    """A silence matching everything, or already over, is refused."""
    s = Silences()
    with pytest.raises(ValueError, match="a device or a tag"):
        s.add(Match(), 200.0, "", 100.0)
    with pytest.raises(ValueError, match="future"):
        s.add(Match(device="pi-1"), 100.0, "", 100.0)


def test_a_silence_request_is_read_as_the_api_takes_it():
    """{"tag": "site:barn", "duration": "2h", "comment": ...} gives the match, end and comment."""
    match, until, comment = parse_silence({"tag": "site:barn", "duration": "2h",
                                           "comment": "PSU"}, 1000.0)  # fmt: skip
    assert (match, until, comment) == (Match(tag=("site:barn",)), 8200.0, "PSU")
    assert parse_silence({"device": "pi-1", "until": 5000}, 1000.0)[:2] == (
        Match(device="pi-1"),
        5000.0,
    )


def test_a_bad_silence_request_lists_every_problem():
    """No match, both ends, and a typo are all reported in one error."""
    with pytest.raises(InputError) as err:
        parse_silence({"duration": "2h", "until": 5, "coment": "x"}, 1000.0)
    text = str(err.value)
    assert 'coment: unknown key; did you mean "comment"?' in text
    assert "match: name a device or a tag" in text
    assert "duration: give duration or until (one of them)" in text
    with pytest.raises(InputError, match="in the future"):
        parse_silence({"device": "pi-1", "until": 5}, 1000.0)
