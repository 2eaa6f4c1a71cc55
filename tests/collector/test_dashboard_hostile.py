"""The dashboard against what a sender without a key (or an operator's typo) can put in it.

Found by a hostile review: a bidi override made a tag read as other text, a tag chip's
filter found nothing for a value with a space, `#tag=constructor` matched every device,
a silence with an invalid glob blanked every device page, and the CSP's 'unsafe-inline'
would have let any injected `onerror=` run.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from test_dashboard import CHROMIUM, dump_dom, rows
from web import Served, get

from fleetbeat.collector.suppress import parse_silence

needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed")


@pytest.fixture
def served(tmp_path: Path):  # type: ignore[no-untyped-def]
    s = Served(tmp_path / "state")
    for seq in (0, 1):
        s.hb("pi-1", seq, tags={"site": "\u202egnp.exe", "room": "living room"})
        s.hb("pi-2", seq, tags={"site": "barn"})
    s.advance(0.5)
    yield s
    s.close()


def test_the_page_runs_only_its_own_script_and_style(served: Served) -> None:
    """The CSP names the page's one <script> and one <style> by hash: no 'unsafe-inline'."""
    _, headers, body = get(served.url + "/")
    csp = headers["Content-Security-Policy"]
    assert "unsafe-inline" not in csp
    assert re.search(r"script-src 'sha256-[A-Za-z0-9+/]+=*';", csp), csp
    assert re.search(r"style-src 'sha256-[A-Za-z0-9+/]+=*';", csp), csp
    assert body.count(b"<script>") == 1 and body.count(b"<style>") == 1


@needs_chromium
def test_hidden_characters_show_and_filters_are_exact(served: Served, tmp_path: Path) -> None:
    """A bidi override shows as \\u202e (the page ran under the hashed CSP, or no row would
    be drawn); the filter a chip writes for "living room" finds its device; a key that is
    an Object property name matches no device."""
    dom = dump_dom(served.url + "/", tmp_path)
    assert rows(dom) == {"pi-1": "up", "pi-2": "up"}
    assert "site:\\u202egnp.exe" in dom and "\u202e" not in dom
    chip = dump_dom(served.url + "/#tag=room:living%2520room", tmp_path)  # the chip's escape
    assert rows(chip) == {"pi-1": "up"}
    assert rows(dump_dom(served.url + "/#tag=constructor", tmp_path)) == {}
    assert rows(dump_dom(served.url + "/#tag=site:barn", tmp_path)) == {"pi-2": "up"}


@needs_chromium
def test_a_silence_with_an_invalid_glob_breaks_no_device_page(
    served: Served, tmp_path: Path
) -> None:
    """fnmatch takes "[z-a]*" (it matches nothing); the page's matcher must too."""
    match, until, comment = parse_silence({"device": "[z-a]*", "duration": "2h"}, time.time())
    served.alerting.add_silence(match, until, comment, time.time())
    dom = dump_dom(served.url + "/#device=pi-2", tmp_path)
    assert "Invalid regular expression" not in dom
    assert re.search(r"<h2[^>]*>\s*pi-2\s*</h2>|>pi-2</", dom), dom[-2000:]
    assert "Availability" in dom
