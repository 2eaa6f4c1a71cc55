"""`fleetbeat alerts` and `fleetbeat silence add|list|rm`: the alert API from the terminal.

Reads need nothing; writes send the collector's API token, read from `--token-file`, else
from the `api_token_file` of the collector config given with `-c`, else from
`{state_dir}/api-token` of the embedded defaults (the same place the collector creates it).

Exit status of `fleetbeat alerts` (the Nagios convention, as `fleetbeat status`): 0 when
no alert fires unsuppressed, 2 when one does, 3 when the collector cannot be reached.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any, Optional, TextIO
from urllib.parse import quote, urlsplit

from fleetbeat.commands.status import CollectorUnreachable, ago, normalise_url
from fleetbeat.errors import FleetbeatError

EXIT_OK = 0
EXIT_FIRING = 2


class ApiRefused(FleetbeatError):
    """The collector answered, with an HTTP error (a bad silence, a wrong token, unknown id)."""


def token_file(path: Optional[str], config: Optional[str]) -> str:
    """Where the API token is: `path`, else the collector config's, else the default's."""
    if path:
        return path
    from fleetbeat.collector.config import api_token_path, load_collector_config

    return api_token_path(load_collector_config(config).collector)


def call(url: str, method: str, path: str, *, body: Any = None, token: str = "",
         timeout: float = 5.0) -> Any:  # fmt: skip
    """One request to the collector's API; its JSON answer, or CollectorUnreachable."""
    base = normalise_url(url)
    headers = {"Content-Type": "application/json"} if method != "GET" else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method, headers=headers)  # noqa: S310
    host = (urlsplit(base).hostname or "").strip("[]")
    try:  # a proxy from the environment is for reaching other machines, not this one
        local = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        local = False
    opener = urllib.request.build_opener(*([urllib.request.ProxyHandler({})] if local else []))
    try:
        with opener.open(req, timeout=timeout) as resp:
            answer = resp.read()
    except urllib.error.HTTPError as err:
        try:
            detail = str(json.loads(err.read()).get("error") or err.reason)
        except (ValueError, AttributeError, OSError):
            detail = str(err.reason)
        raise ApiRefused(f"{method} {base}{path} answered HTTP {err.code}: {detail}") from None
    except (urllib.error.URLError, socket.timeout, TimeoutError, OSError, ValueError) as err:
        reason = getattr(err, "reason", None) or err
        text = getattr(reason, "strerror", None) or str(reason) or f"no answer in {timeout:g} s"
        raise CollectorUnreachable(f"cannot reach the collector at {base}: {text}") from err
    try:
        return json.loads(answer)
    except ValueError as err:
        raise CollectorUnreachable(f"{base}{path} did not answer JSON") from err


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Aligned columns, two spaces apart."""
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in [headers, *rows]
    )


def match_text(match: dict[str, Any]) -> str:
    tags = match.get("tag", [])
    parts = ([f"device={match['device']}"] if match.get("device") else []) + [
        f"tag={t}" for t in ([tags] if isinstance(tags, str) else tags)
    ]
    return " ".join(parts) or "-"


def _suppressed(s: Optional[dict[str, Any]]) -> str:
    if not s:
        return "-"
    by = str(s.get("by"))
    detail = s.get("comment") or s.get("parent") or s.get("name") or ""
    return f"{by}: {detail}" if detail else by


def render_alerts(data: dict[str, Any]) -> str:
    """The active alerts, then the notifiers that fail or wait."""
    now = float(data.get("time") or time.time())
    rows = [
        [a["severity"], a["name"], a["device"], ago(now - a["started"]),
         "yes" if a.get("notified") else "no", _suppressed(a.get("suppressed"))]
        for a in data["alerts"]
    ]  # fmt: skip
    lines = [table(("SEVERITY", "ALERT", "DEVICE", "SINCE", "NOTIFIED", "SUPPRESSED"), rows)
             if rows else "no active alerts"]  # fmt: skip
    for name, since in sorted(data.get("failing_since", {}).items()):
        error = data.get("last_error", {}).get(name, "")
        lines.append(f"notifier {name}: failing since {ago(now - since)}: {error}")
    for name, n in sorted(data.get("pending", {}).items()):
        if n:
            lines.append(f"notifier {name}: {n} notification{'s' if n > 1 else ''} pending")
    return "\n".join(lines)


def run_alerts(url: str, *, as_json: bool, timeout: float, out: TextIO = sys.stdout) -> int:
    data = call(url, "GET", "/api/alerts?limit=1000000", timeout=timeout)
    out.write((json.dumps(data, indent=2, sort_keys=True) if as_json else render_alerts(data))
              + "\n")  # fmt: skip
    firing = any(a.get("suppressed") is None for a in data["alerts"])
    return EXIT_FIRING if firing else EXIT_OK


def render_silences(data: dict[str, Any]) -> str:
    now = float(data.get("time") or time.time())
    rows = [[s["id"], match_text(s["match"]), "in " + ago(s["until"] - now).replace(" ago", ""),
             s.get("comment") or "-"] for s in data["silences"]]  # fmt: skip
    return table(("ID", "MATCH", "ENDS", "COMMENT"), rows) if rows else "no silences"


def silence_body(device: Optional[str], tags: Sequence[str], duration: Optional[str],
                 until: Optional[float], comment: str) -> dict[str, Any]:  # fmt: skip
    """What `POST /api/silences` takes; the collector checks it and says what is wrong."""
    body: dict[str, Any] = {"comment": comment}
    if device:
        body["device"] = device
    if tags:
        body["tag"] = tags[0] if len(tags) == 1 else list(tags)
    if duration is not None:
        body["duration"] = duration
    if until is not None:
        body["until"] = until
    return body


def run_silence(args: Any, out: TextIO = sys.stdout) -> int:
    """`fleetbeat silence add|list|rm` from parsed arguments."""
    if args.action == "list":
        data = call(args.url, "GET", "/api/silences", timeout=args.timeout)
        out.write((json.dumps(data, indent=2) if args.json else render_silences(data)) + "\n")
        return EXIT_OK
    from fleetbeat.collector.auth import read_token

    token = read_token(token_file(args.token_file, args.config))
    if args.action == "add":
        body = silence_body(args.device, args.tag, args.duration, args.until, args.comment)
        made = call(args.url, "POST", "/api/silences", body=body, token=token,
                    timeout=args.timeout)  # fmt: skip
        out.write(f"{made['id']}\n")
        return EXIT_OK
    for ident in args.ids:
        call(args.url, "DELETE", f"/api/silences/{quote(ident, safe='')}", token=token,
             timeout=args.timeout)  # fmt: skip
        out.write(f"removed {ident}\n")
    return EXIT_OK
