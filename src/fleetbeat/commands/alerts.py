"""`fleetbeat alerts` and `fleetbeat silence add|list|rm`: the alert API from the terminal.

Reads need nothing; writes send the collector's API token, read from `--token-file`, else
from the `api_token_file` of the collector config given with `-c`, else from
`{state_dir}/api-token` of the embedded defaults (the same place the collector creates it).

Exit status of `fleetbeat alerts` (the Nagios convention, as `fleetbeat status`): 0 when
no alert fires unsuppressed, 2 when one does, 3 when the collector cannot be reached.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any, Callable, Optional, TextIO
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


def add_parsers(sub: Any, func: Callable[[argparse.Namespace], int]) -> None:
    """`fleetbeat alerts` and `fleetbeat silence add|list|rm` on the CLI's subparsers."""
    p = sub.add_parser(
        "alerts",
        help="show the active alerts and failing notifiers, from a collector's API",
        description="Show the alerts firing now, most severe first, with what suppresses "
        "them (a silence and its comment, maintenance, a down parent, flapping), and the "
        "notifiers that fail. Exit status: 0 when no alert fires unsuppressed, 2 when one "
        "does, 3 when the collector cannot be reached.",
    )
    _api_options(p)
    p.set_defaults(func=func)
    _add_silence_parser(sub, func)


def _api_options(p: argparse.ArgumentParser, *, token: bool = False, as_json: bool = True) -> None:
    """--url and --timeout as `fleetbeat status` takes them; the token's file for writes."""
    p.add_argument("--url", default=os.environ.get("FLEETBEAT_URL", "http://127.0.0.1:9747"),
                   help="the collector's HTTP address (default: $FLEETBEAT_URL or "
                   "http://127.0.0.1:9747)")  # fmt: skip
    p.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS",
                   help="how long to wait for the collector (default 5)")  # fmt: skip
    if as_json:
        p.add_argument("--json", action="store_true", help="print the API's JSON")
    if token:
        p.add_argument("--token-file", metavar="FILE",
                       help="the API token (default: api_token_file of the collector config "
                       "given with -c, else {state_dir}/api-token of the defaults)")  # fmt: skip
        p.add_argument("-c", "--config", metavar="FILE",
                       help="the collector's TOML file, to find its token")  # fmt: skip


def _add_silence_parser(sub: Any, func: Callable[[argparse.Namespace], int]) -> None:
    p = sub.add_parser(
        "silence",
        help="add, list or remove silences (alerts not notified for a while)",
        description="Silences keep matching alerts out of notifications until they end; the "
        "alerts still start and resolve, and the dashboard marks them. Writes send the "
        "collector's API token (see --token-file).",
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    a = actions.add_parser(
        "add",
        help="silence a device or a tag for a while; prints the new silence's id",
        description="Silence a device (--device, a glob such as 'pi-barn-*' allowed) or "
        "devices with tags (--tag KEY:VALUE, repeatable, all must match) for --duration "
        "or --until. Example: fleetbeat silence add --tag site:barn --duration 2h "
        "--comment 'rewiring'.",
    )
    a.add_argument("--device", metavar="ID", help="the device id or a glob")
    a.add_argument("--tag", action="append", default=[], metavar="KEY:VALUE",
                   help="devices with this tag (repeatable; all must match)")  # fmt: skip
    ends = a.add_mutually_exclusive_group(required=True)
    ends.add_argument("--duration", metavar="DURATION", help='how long, such as "2h" or "30m"')
    ends.add_argument("--until", type=float, metavar="EPOCH", help="until this Unix time")
    a.add_argument("--comment", default="", help="why (shown on the dashboard)")
    _api_options(a, token=True, as_json=False)
    lst = actions.add_parser(
        "list",
        help="list the silences in force",
        description="List the silences in force, soonest to end first.",
    )
    _api_options(lst)
    rm = actions.add_parser(
        "rm",
        help="remove silences by id",
        description="Remove silences by the ids `silence add` printed.",
    )
    rm.add_argument("ids", nargs="+", metavar="ID")
    _api_options(rm, token=True, as_json=False)
    for q in (a, lst, rm):
        q.set_defaults(func=func)
