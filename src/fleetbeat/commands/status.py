"""`fleetbeat status`: the fleet as a table in the terminal, from a collector's JSON API.

Exit status, for scripts and cron (the values follow the Nagios plugin
convention, so it also works as a monitoring check):

    0  no device is down (late and offline devices do not count)
    2  at least one device is down
    3  the collector could not be reached or gave an unexpected answer
"""

from __future__ import annotations

import json
import os
import socket
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any, Optional, TextIO
from urllib.parse import urlencode, urlsplit

from fleetbeat.collector.liveness import count_by_state
from fleetbeat.errors import FleetbeatError
from fleetbeat.netaddr import is_loopback

DEFAULT_URL = "http://127.0.0.1:9747"
EXIT_OK = 0
EXIT_DOWN = 2
EXIT_UNREACHABLE = 3

# Most serious first: the rows a person must act on come at the top.
ORDER = ("down", "missing", "late", "up", "offline")
_COLOURS = {"up": "32", "late": "33", "down": "1;31", "offline": "2", "missing": "34"}  # SGR codes
HEADERS = ("DEVICE", "STATE", "LAST SEEN", "LOSS", "RECENT", "RESTARTS", "REBOOTS", "ADDRESS",
           "TAGS")  # fmt: skip
_RIGHT = {"LAST SEEN", "LOSS", "RECENT", "RESTARTS", "REBOOTS"}


class CollectorUnreachable(FleetbeatError):
    """The collector's API could not be read (refused, timed out, not JSON, an HTTP error)."""


def normalise_url(url: str) -> str:
    """`127.0.0.1:9747` -> `http://127.0.0.1:9747`; no trailing slash."""
    url = url.strip()
    if "://" not in url:
        url = "http://" + url
    return url.rstrip("/")


def fetch_devices(
    url: str, *, states: Sequence[str] = (), tags: Sequence[str] = (), timeout: float = 5.0
) -> dict[str, Any]:
    """GET {url}/api/devices with the given filters; raise CollectorUnreachable on any failure."""
    base = normalise_url(url)
    query = [("state", ",".join(states))] if states else []
    query += [("tag", t) for t in tags]
    target = f"{base}/api/devices" + (f"?{urlencode(query)}" if query else "")
    host = urlsplit(base).hostname or ""
    # A proxy from the environment is for reaching other machines, not this one.
    handlers = [urllib.request.ProxyHandler({})] if is_loopback(host) else []
    opener = urllib.request.build_opener(*handlers)
    try:
        with opener.open(target, timeout=timeout) as resp:
            body = resp.read()
    except urllib.error.HTTPError as err:
        detail = _error_text(err)
        raise CollectorUnreachable(f"{target} answered HTTP {err.code}: {detail}") from err
    except urllib.error.URLError as err:
        reason = err.reason
        text = getattr(reason, "strerror", None) or str(reason)
        raise CollectorUnreachable(f"cannot reach the collector at {base}: {text}") from err
    except (socket.timeout, TimeoutError) as err:
        raise CollectorUnreachable(
            f"cannot reach the collector at {base}: no answer within {timeout:g} s"
        ) from err
    except (OSError, ValueError) as err:  # ValueError: a malformed URL
        raise CollectorUnreachable(f"cannot reach the collector at {base}: {err}") from err
    try:
        data = json.loads(body)
    except ValueError as err:
        raise CollectorUnreachable(
            f"{target} did not answer JSON: is it a fleetbeat collector?"
        ) from err
    if not isinstance(data, dict) or not isinstance(data.get("devices"), list):
        raise CollectorUnreachable(f"{target} answered JSON without a device list")
    return data


def _error_text(err: urllib.error.HTTPError) -> str:
    try:
        return str(json.loads(err.read()).get("error") or err.reason)
    except (ValueError, AttributeError, OSError):
        return str(err.reason)


def exit_status(data: dict[str, Any]) -> int:
    """2 when any listed device is down, else 0."""
    down = any(d.get("state") == "down" for d in data["devices"])
    return EXIT_DOWN if down else EXIT_OK


def ago(seconds: Optional[float]) -> str:
    """A person's "how long ago": `12 s ago`, `3 min ago`, `5 h ago`, `2 d ago`."""
    if seconds is None:
        return "never"
    s = max(0.0, seconds)
    if s < 90:
        return f"{s:.0f} s ago"
    if s < 5400:
        return f"{s / 60:.0f} min ago"
    if s < 172800:
        return f"{s / 3600:.0f} h ago"
    return f"{s / 86400:.0f} d ago"


def percent(value: Any) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "-"
    return f"{value:.0f}%" if value == 0 or value >= 10 else f"{value:.1f}%"


def _row(dev: dict[str, Any], now: float) -> list[str]:
    last = dev.get("last_seen")
    tags = dev.get("tags") or {}
    return [
        str(dev.get("id")),
        str(dev.get("state")),
        ago(now - last) if isinstance(last, (int, float)) else "never",
        percent(dev.get("loss_pct")),
        percent(dev.get("recent_loss_pct")),
        str(dev.get("restarts", 0)),
        str(dev.get("reboots", 0)),
        str(dev.get("addr") or "-"),
        ",".join(f"{k}:{v}" for k, v in sorted(tags.items())) or "-",
    ]


def summary(data: dict[str, Any]) -> str:
    """`5 devices: 3 up, 1 late, 1 down` (states with no device left out)."""
    devices = data["devices"]
    counts = count_by_state(str(dev.get("state")) for dev in devices)
    states = [s for s in ORDER if counts.get(s)] + sorted(set(counts) - set(ORDER))
    parts = ", ".join(f"{counts[s]} {s}" for s in states)
    noun = "device" if len(devices) == 1 else "devices"
    return f"{len(devices)} {noun}" + (f": {parts}" if parts else "")


def render_table(data: dict[str, Any], *, color: bool = False) -> str:
    """The devices as an aligned table, most serious state first, then a summary line."""
    now = float(data.get("time") or 0.0)
    rank = {s: i for i, s in enumerate(ORDER)}
    devices = sorted(
        data["devices"], key=lambda d: (rank.get(d.get("state"), len(ORDER)), str(d.get("id")))
    )
    rows = [_row(d, now) for d in devices]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(HEADERS)]

    def line(cells: Sequence[str], state: Optional[str] = None) -> str:
        out = []
        for i, (head, cell) in enumerate(zip(HEADERS, cells)):
            text = cell.rjust(widths[i]) if head in _RIGHT else cell.ljust(widths[i])
            if color and state is not None and head == "STATE":
                text = f"\x1b[{_COLOURS.get(state, '0')}m{text}\x1b[0m"
            out.append(text)
        return "  ".join(out).rstrip()

    head = line(HEADERS)
    lines = [f"\x1b[1m{head}\x1b[0m" if color else head]
    lines += [line(r, r[1]) for r in rows]
    if not rows:
        return "no devices"
    foot = summary(data)
    if color and any(r[1] == "down" for r in rows):
        foot = f"\x1b[1;31m{foot}\x1b[0m"
    lines += ["", foot]
    return "\n".join(lines)


def want_color(mode: str, stream: TextIO) -> bool:
    """`always`, `never`, or `auto`: colour on a terminal, unless NO_COLOR or TERM=dumb."""
    if mode != "auto":
        return mode == "always"
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    return stream.isatty()


def run(
    url: str,
    *,
    as_json: bool = False,
    color: str = "auto",
    states: Sequence[str] = (),
    tags: Sequence[str] = (),
    timeout: float = 5.0,
    out: TextIO = sys.stdout,
) -> int:
    """Print the fleet (a table, or the API's JSON); return the exit status.

    Raises CollectorUnreachable; the CLI reports it and exits with EXIT_UNREACHABLE.
    """
    data = fetch_devices(url, states=states, tags=tags, timeout=timeout)
    if as_json:
        out.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
    else:
        out.write(render_table(data, color=want_color(color, out)) + "\n")
    return exit_status(data)
