"""The dashboard's pictures in headless Chromium, over a real Fleet, a real store and the real
HTTP server with days of past: the 24 h strips, the fleet panel, the device page, 10,000
devices in pages. Each test also takes a screenshot (1400x1000); they are kept in
FLEETBEAT_SCREENSHOT_DIR when it is set, to be looked at. FLEETBEAT_SCREENSHOT=path makes
test_readme_screenshot write the README's picture (docs/dashboard.png) there.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dashboard_fleet import (
    CHROMIUM,
    PastFleet,
    dead_for,
    demo_fleet,
    dump_dom,
    flaky,
    screenshot,
    steady,
    strip_of,
)
from web import Served, get

from fleetbeat.collector.suppress import parse_silence

DASH = "\N{EN DASH}"  # the page writes ranges with it: 1\N{EN DASH}100

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)"
)


def keep(png: Path) -> None:
    """A copy in FLEETBEAT_SCREENSHOT_DIR, when set, for a person to look at."""
    where = os.environ.get("FLEETBEAT_SCREENSHOT_DIR")
    if where:
        Path(where).mkdir(parents=True, exist_ok=True)
        shutil.copy(png, Path(where) / png.name)


def png_size(png: Path) -> tuple[int, int]:
    width, height = struct.unpack(">II", png.read_bytes()[16:24])
    return width, height


def api(url: str) -> dict:
    status, _, body = get(url)
    assert status == 200, body[:300]
    return json.loads(body)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PastFleet]:
    past = demo_fleet(tmp_path_factory.mktemp("demo"))
    yield past
    past.close()


def test_fleet_in_every_state_strips_counts_and_the_fleet_panel(
    demo: PastFleet, tmp_path: Path
) -> None:
    """Every state in the table, the counts (missing among them), each row's 24 h strip in the
    colours of its known past, the stacked bars of the fleet panel (the shed's dark hour
    red) and the worst 10 by 7 d availability, as the API ranks them."""
    dom = dump_dom(demo.url + "/", tmp_path)
    state_of = {
        dev: state for state, dev in re.findall(r'<tr class="(\w+)" data-id="([^"]+)"', dom)
    }
    assert set(state_of.values()) == {"down", "missing", "late", "up", "offline"}
    counts = dict(
        (label, int(n.replace(",", "")))
        for n, label in re.findall(
            r'<span class="n">([\d,]+)</span><span class="label">(\w+)<', dom
        )
    )
    assert counts == {"all": 50, "down": 4, "missing": 3, "late": 2, "up": 39, "offline": 2}
    # strips: up for most of the day, then down 5 h ago; never heard; bye 3 h ago
    assert strip_of(dom, "pi-barn-09") == ["up", "late", "down"]
    assert strip_of(dom, "pi-shed-16") == ["missing"]
    assert strip_of(dom, "pi-house-05")[-2:] == ["up", "offline"]
    assert set(strip_of(dom, "pi-barn-01")) <= {"up", "late"}  # a lost heartbeat: late at worst
    # every strip ends in the row's state (the last few minutes are a pixel of their own)
    assert {dev: strip_of(dom, dev)[-1] for dev in state_of} == state_of
    assert "down" in strip_of(dom, "pi-shed-02")  # the shed's hour in the dark
    row = dom[dom.index('data-id="pi-barn-09"') :]
    assert re.search(rf"<title>\d\d:\d\d {DASH} \d\d:\d\d \(\d+ h( \d+ min)?\)\nup: ", row)
    assert re.search(rf"<title>\d\d:\d\d {DASH} \d\d:\d\d \(\d+ min\)\nlate: late</title>", row)
    assert re.search(
        rf"<title>\d\d:\d\d {DASH} \d\d:\d\d \(\d h( \d+ min)?\)\ndown: missed heartbeats", row
    )
    # the fleet panel: ~96 bars of 15 min, each stacking 50 devices; red where the shed was
    panel = dom[dom.index('id="fleet-svg"') : dom.index('id="worst"')]
    bars = re.findall(r'<g class="bar" data-time="[\d.]+">(.*?)</g>', panel, re.S)
    assert 95 <= len(bars) <= 97
    for bar in bars:
        assert sum(int(n) for n in re.findall(r'data-n="(\d+)"', bar)) == 50
    worst_bar = max(int(dict(re.findall(r'data-state="(\w+)" data-n="(\d+)"', b)).get("down", 0))
                    for b in bars)  # fmt: skip
    assert worst_bar >= 13  # the 13 shed devices that went dark at once (2 others behave otherwise)
    ranked = api(demo.url + "/api/availability")["worst"]
    shown = re.findall(r'<li><a href="#device=([^"]+)">', dom[dom.index('id="worst-list"') :])
    assert shown[:3] == [w["id"] for w in ranked][:3]
    assert len(shown) == 10
    keep(screenshot(demo.url + "/", tmp_path / "fleet-every-state.png", tmp_path))


def test_the_table_filters_sorts_by_availability_and_missing(
    demo: PastFleet, tmp_path: Path
) -> None:
    """#state=missing shows the three never heard; #sort=avail (the sort kept in the address,
    as a click on the column's head sets it) puts the least available first, as the API
    ranks them, and the devices with no availability (missing) last."""
    dom = dump_dom(demo.url + "/#state=missing", tmp_path)
    assert re.findall(r'<tr class="(\w+)" data-id="([^"]+)"', dom) == [
        ("missing", "pi-house-16"), ("missing", "pi-shed-16"), ("missing", "pi-shed-17"),
    ]  # fmt: skip
    assert "3 of 50 shown" in dom
    dom = dump_dom(demo.url + "/#sort=avail", tmp_path)
    order = [dev for _, dev in re.findall(r'<tr class="(\w+)" data-id="([^"]+)"', dom)]
    devices = api(demo.url + "/api/devices?fields=id,availability")["devices"]
    week = {d["id"]: d["availability"]["7d"] for d in devices}
    known = sorted((v, dev) for dev, v in week.items() if v is not None)
    assert order[: len(known)] == [dev for _, dev in known]
    assert sorted(order[len(known) :]) == ["pi-house-16", "pi-shed-16", "pi-shed-17"]
    assert week[order[0]] < 95  # pi-barn-09, down these 5 hours
    dom = dump_dom(demo.url + "/#sort=-avail", tmp_path)
    assert re.findall(r'<tr class="\w+" data-id="([^"]+)"', dom)[-3:] == [
        "pi-house-16", "pi-shed-16", "pi-shed-17",
    ]  # fmt: skip


def test_device_page_strip_loss_bars_figures_and_events(demo: PastFleet, tmp_path: Path) -> None:
    """#device=pi-barn-03 (lossy): the 7 d strip, one loss bar per hour with heartbeats whose
    counts are the API's, the availability figures as the API gives them, the details with
    the last metrics, the events; the way back keeps the fleet's filter."""
    url = demo.url + "/#state=up&device=pi-barn-03"
    dom = dump_dom(url, tmp_path)
    hist = api(demo.url + "/api/devices/pi-barn-03/history")
    figures = dict(re.findall(r'data-window="(\w+)"><span class="n [\w-]+">([^<]+)<', dom))
    av = hist["availability"]
    assert figures == {k: f"{av[k]:.2f} %" for k in ("24h", "7d", "30d")}
    assert "counted since" in dom  # two days of past: younger than 7 d
    week = dom[dom.index('id="week-strip"') :]
    week = week[: week.index("</svg>")]
    assert re.findall(r'data-state="(\w+)"', week)[-1] == "up"
    assert "late" in re.findall(r'data-state="(\w+)"', week)  # its losses made it late now and then
    bars = re.findall(r'data-lost="(\d+)" data-expected="(\d+)"', dom)
    hours = [(str(max(0, h["expected"] - h["received"])), str(h["expected"]))
             for h in hist["hours"] if h["expected"] > 0]  # fmt: skip
    assert bars == hours and len(bars) >= 40
    assert sum(int(lost) for lost, _ in bars) > 0
    assert re.search(r"<dt>temp_c</dt><dd>41.5</dd>", dom)
    assert '<a class="back" href="#state=up">' in dom
    events = dom[dom.index('id="dev-events"') :]
    assert re.search(
        r'<span class="state up">up</span> → <span class="state late">late</span>', events
    )
    keep(screenshot(url, tmp_path / "device-page.png", tmp_path))


def test_device_page_of_a_dead_device_and_an_unknown_one(demo: PastFleet, tmp_path: Path) -> None:
    """pi-barn-09 went down 5 h ago: its strip ends red and its events say so; an unknown id,
    or text that is no id at all, says it is not on this collector (as text, not markup)."""
    dom = dump_dom(demo.url + "/#device=pi-barn-09", tmp_path)
    week = dom[dom.index('id="week-strip"') :]
    assert re.findall(r'data-state="(\w+)"', week[: week.index("</svg>")]) == ["up", "late", "down"]
    assert re.search(r'<span class="state late">late</span> → <span class="state down">down</span>'
                     r'<span class="muted"> missed heartbeats', dom)  # fmt: skip
    gone = dump_dom(demo.url + "/#device=pi-nowhere", tmp_path)
    assert "No device pi-nowhere on this collector" in gone
    odd = dump_dom(demo.url + "/#device=%3Cb%3E%20x", tmp_path)  # not an id: no markup either
    assert "No device &lt;b&gt; x on this collector" in odd


def test_device_page_shows_its_alerts_and_silences(tmp_path: Path) -> None:
    """With alerting on: the device's active alert and the silence on its site, with its
    comment; without a store, the page says it keeps no history instead of drawing it."""
    s = Served(tmp_path, notify=[])
    try:
        for seq in (0, 1):
            s.hb("pi-barn-01", seq, tags={"site": "barn"})
            s.hb("pi-shed-01", seq, tags={"site": "shed"})
        s.alerting.turn()
        match, until, comment = parse_silence({"tag": "site:barn", "duration": "2h",
                                               "comment": "rewiring the barn"}, time.time())  # fmt: skip
        s.alerting.add_silence(match, until, comment, time.time())
        s.advance(4.0)
        s.alerting.observe(s.fleet.take_changes()[1])
        s.alerting.turn()
        dom = dump_dom(s.url + "/#device=pi-barn-01", tmp_path)
        other = dump_dom(s.url + "/#device=pi-shed-01", tmp_path)
        keep(screenshot(s.url + "/#device=pi-barn-01", tmp_path / "device-alerts.png", tmp_path))
    finally:
        s.close()
    box = dom[dom.index('id="dev-alerts"') :]
    assert re.search(r'<tr class="quiet" data-alert="[^"]+"><td><span class="sev critical">', box)
    assert "rewiring the barn" in box
    assert "rewiring the barn" not in other[other.index('id="dev-alerts"') :]  # not its site
    assert "No history to show (HTTP 503" in dom


def test_ten_thousand_devices_in_pages_of_100(tmp_path: Path) -> None:
    """10,000 devices: 100 rows drawn, each with its strip, 'showing 1-100 of 10,000', page 2
    from the address. The first render's time (in the
    page's virtual time here; benchmarks/dashboard_render.py measures real time) is set."""
    now = time.time()
    past = PastFleet(tmp_path / "store", start=now - 3 * 3600)
    devices = {f"dev-{i:05d}": (dead_for(3600) if i % 10 == 0 else flaky(5400, 1800) if i % 10 == 5
                                else steady(0.02), {"site": f"s{i % 7}"})
               for i in range(10_000)}  # fmt: skip
    try:
        past.play(devices, interval=600.0, until=now)
        dom = dump_dom(past.url + "/", tmp_path, budget_ms=10_000)
        assert f"showing 1{DASH}100 of 10,000" in dom
        rows = re.findall(r'<tr class="(\w+)" data-id="([^"]+)"', dom)
        assert len(rows) == 100 and rows[0] == ("down", "dev-00000")  # down first, then by id
        assert all(strip_of(dom, dev) for _, dev in rows[:100:9])
        assert strip_of(dom, "dev-00000") == ["up", "late", "down"]
        assert re.search(r'data-first-render="[\d.]+"', dom)
        second = dump_dom(past.url + "/#page=2", tmp_path, budget_ms=10_000)
        assert f"showing 101{DASH}200 of 10,000" in second
        assert len(re.findall(r'<tr class="\w+" data-id=', second)) == 100
        keep(screenshot(past.url + "/", tmp_path / "fleet-10000.png", tmp_path, budget_ms=10_000))
    finally:
        past.close()


def test_readme_screenshot(demo: PastFleet, tmp_path: Path) -> None:
    """With FLEETBEAT_SCREENSHOT=path: the README's picture of the demo-like fleet, 1200x800,
    under 150 KB (docs/dashboard.png)."""
    target = os.environ.get("FLEETBEAT_SCREENSHOT")
    png = screenshot(demo.url + "/", tmp_path / "dashboard.png", tmp_path, size="1200,800")
    assert png_size(png) == (1200, 800)
    assert png.stat().st_size < 150_000
    if target:
        shutil.copy(png, target)
