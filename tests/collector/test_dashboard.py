"""The dashboard: served self-contained, and (where Chromium is installed) rendered by a browser."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from web import Served, ServedFleet, get

from fleetbeat.collector.suppress import parse_silence
from helpers import wait_until

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def served() -> Iterator[ServedFleet]:
    """kitchen-1 up (lossy), garage-1 down, attic-1 offline."""
    s = ServedFleet(down_after=3)
    for seq in (0, 1, 2, 3, 5, 6, 7, 8, 9):  # seq 4 lost: 10 %
        s.hb("kitchen-1", seq, interval=100, tags={"site": "home"})
    for seq in (0, 1):  # two heartbeats: a device heard once leaves no events
        s.hb("garage-1", seq, tags={"site": "home"})
    s.hb("attic-1", 0, tags={"site": "cabin"})
    s.hb("attic-1", 1, kind="bye")
    s.advance(4.0)
    yield s
    s.close()


def test_page_is_served_with_the_table_and_no_external_asset(served: ServedFleet) -> None:
    """GET / is one HTML page with the device table, polling /api/devices, loading nothing else."""
    status, headers, body = get(served.url + "/")
    assert status == 200
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    page = body.decode()
    assert '<table id="devices">' in page
    for column in ("Device", "State", "Last seen", "Loss (recent)", "Restarts", "Tags"):
        assert f">{column}</th>" in page
    assert 'fetch("api/devices?fields=' in page  # only the columns the table shows
    assert not re.search(r"\b(src|href)\s*=", page), "the page must not load other files"
    # the one address-like text is the SVG namespace, a name that is never fetched
    assert not re.search(r"https?://", page.replace('"http://www.w3.org/2000/svg"', "")), (
        "no CDN or other host"
    )
    assert "/* inline:" not in page, "every part is put inline"
    assert "connect-src 'self'" in headers["Content-Security-Policy"]
    assert get(served.url + "/index.html")[2] == body


def dump_dom(url: str, tmp_path: Path) -> str:
    """The page's DOM after its scripts ran, from headless Chromium."""
    done = subprocess.run(
        [CHROMIUM or "chromium", "--headless", "--no-sandbox", "--disable-gpu",
         f"--user-data-dir={tmp_path / 'chromium'}", "--virtual-time-budget=4000",
         "--dump-dom", url],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def rows(dom: str) -> dict[str, str]:
    """Device id -> row class (its state) of the rendered table."""
    return dict((dev, cls) for cls, dev in re.findall(r'<tr class="(\w+)" data-id="([^"]+)"', dom))


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")
def test_browser_renders_states_counts_and_ages(served: ServedFleet, tmp_path: Path) -> None:
    """In a real browser: every device by state, the counts, loss, `s ago`, the recent changes."""
    dom = dump_dom(served.url + "/", tmp_path)
    assert rows(dom) == {"garage-1": "down", "kitchen-1": "up", "attic-1": "offline"}
    assert list(rows(dom)) == ["garage-1", "kitchen-1", "attic-1"]  # down first
    counts = dict(
        (label, int(n))
        for n, label in re.findall(r'<span class="n">(\d+)</span><span class="label">(\w+)<', dom)
    )
    assert counts == {"all": 3, "down": 1, "missing": 0, "late": 0, "up": 1, "offline": 1}
    assert "3 devices: 1 down, 1 up, 1 offline" in dom
    assert re.search(r">\d+ s ago<", dom)
    assert ">10 %<" in dom  # kitchen-1 lost 1 of 10
    events = dom[dom.index('<ul id="events">') :]
    assert re.search(
        r"<strong>garage-1</strong> <span[^>]*>up</span> → <span[^>]*>down</span>"
        r"<span[^>]*> missed heartbeats",
        events,
    )


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")
def test_browser_filters_by_state_and_tag_from_the_link(
    served: ServedFleet, tmp_path: Path
) -> None:
    """#state=down and #tag=site:home in the address filter the table (shareable links)."""
    assert rows(dump_dom(served.url + "/#state=down", tmp_path)) == {"garage-1": "down"}
    assert rows(dump_dom(served.url + "/#tag=site:home", tmp_path)) == {
        "garage-1": "down", "kitchen-1": "up",
    }  # fmt: skip


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")
def test_browser_shows_the_alerts_panel_with_silences_and_failing_notifiers(
    tmp_path: Path,
) -> None:
    """Above the device table: the active alerts, a silenced one with its badge and comment,
    and a notifier that keeps failing."""
    s = Served(tmp_path, notify=[{"type": "webhook", "url": "http://127.0.0.1:9/hook"}])
    try:
        for seq in (0, 1):
            s.hb("pi-barn-01", seq, tags={"site": "barn"})
            s.hb("pi-shed-01", seq, tags={"site": "shed"})
        s.alerting.turn()  # tags read
        match, until, comment = parse_silence({"device": "pi-barn-01", "duration": "2h",
                                               "comment": "rewiring the barn"}, time.time())  # fmt: skip
        s.alerting.add_silence(match, until, comment, time.time())
        s.advance(4.0)
        s.alerting.observe(s.fleet.take_changes()[1])

        def failing() -> bool:
            s.alerting.turn()
            return bool(s.alerting.stats()["failing_since"])

        wait_until(failing, timeout=10)
        dom = dump_dom(s.url + "/", tmp_path)
    finally:
        s.close()
    panel = dom[dom.index('<section id="alerts-panel"') : dom.index('<table id="devices">')]
    assert "hidden" not in panel[: panel.index(">")]
    alerts = {dev: cls for cls, dev in re.findall(r'<tr(?: class="(\w*)")? data-device="([^"]+)"',
                                                  panel)}  # fmt: skip
    assert alerts == {"pi-barn-01": "quiet", "pi-shed-01": ""}  # critical, oldest first
    barn = panel[panel.index('data-device="pi-barn-01"') :]
    barn = barn[: barn.index("</tr>")]
    assert '<span class="badge silenced">silenced</span>' in barn and "rewiring the barn" in barn
    assert "1 firing, 1 suppressed" in panel
    assert re.search(r'class="notifier-error">Notifier webhook failing for \d+ s: ', panel)
