"""The options of `fleetbeat alerts` and `fleetbeat silence` (their work is commands.alerts).

Kept apart so that parsing the command line imports no HTTP client: `fleetbeat agent`
pays for neither urllib nor ssl (a UDP-only agent is 17 MB, not 24).
"""

from __future__ import annotations

import argparse
import os
from typing import Any, Callable


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
