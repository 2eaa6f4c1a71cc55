"""`fleetbeat forget ID...`: remove devices from a collector (`DELETE /api/devices/{id}`).

The parser is built without importing an HTTP client (as `commands.alerts_args`); the
request goes through `commands.alerts.call` with the API token, read from `--token-file`,
else the `api_token_file` of the collector config given with `-c`, else
`{state_dir}/api-token` of the embedded defaults.

Exit status: 0 when every device was forgotten, 1 when the collector refused one (an
unknown id, a missing one, a wrong token, a store that cannot write: the others are
still tried), 3 when it cannot be reached.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, TextIO

EXIT_REFUSED = 1

DESCRIPTION = (
    "Remove devices from the collector: each leaves the fleet at once, and the "
    "collector's store deletes its row, its events and its history at its next write or "
    "the one after (flush_interval; an event records that it was forgotten). While the "
    "store cannot write (a full disk: /healthz says 503) the collector refuses the "
    "forget and nothing is forgotten; should the store fail after the answer and until "
    "the collector stops, its exit log names the forgets lost, and those devices are "
    "back after the restart. A device retired for good belongs here; one that speaks again later "
    "is simply a new device. An id listed in the collector's expected_devices file is "
    "shown as missing again at once: take it out of the file too (and send the "
    "collector SIGHUP) to be rid of it. The collector also forgets by itself the "
    "devices down or offline for forget_after (30 days), unless they are expected. "
    "Needs the collector's API token (see --token-file). Exit status: 0 when every "
    "device was forgotten, 1 when one was refused (unknown, missing, a wrong token, "
    "the store cannot write), 3 when the collector cannot be reached."
)


def add_parser(sub: Any) -> None:
    """`fleetbeat forget` on the CLI's subparsers."""
    p = sub.add_parser(
        "forget",
        help="remove devices and their stored history from a collector",
        description=DESCRIPTION,
    )
    p.add_argument("ids", nargs="+", metavar="ID", help="the device id (several allowed)")
    p.add_argument("--url", default=os.environ.get("FLEETBEAT_URL", "http://127.0.0.1:9747"),
                   help="the collector's HTTP address (default: $FLEETBEAT_URL or "
                   "http://127.0.0.1:9747)")  # fmt: skip
    p.add_argument("--token-file", metavar="FILE",
                   help="the API token (default: api_token_file of the collector config "
                   "given with -c, else {state_dir}/api-token of the defaults)")  # fmt: skip
    p.add_argument("-c", "--config", metavar="FILE",
                   help="the collector's TOML file, to find its token")  # fmt: skip
    p.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS",
                   help="how long to wait for the collector (default 5)")  # fmt: skip
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from fleetbeat.commands import status

    try:
        return run(args)
    except status.CollectorUnreachable as err:
        print(f"fleetbeat forget: {err}\n  Is `fleetbeat collector` running there? "
              "Point --url (or FLEETBEAT_URL) at it.", file=sys.stderr)  # fmt: skip
        return status.EXIT_UNREACHABLE


def run(args: argparse.Namespace, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Forget each of `args.ids`; a refusal is reported and the others still tried."""
    from urllib.parse import quote

    from fleetbeat.collector.auth import read_token
    from fleetbeat.commands.alerts import ApiRefused, call, token_file

    token = read_token(token_file(args.token_file, args.config))
    status = 0
    for ident in args.ids:
        try:
            call(args.url, "DELETE", f"/api/devices/{quote(ident, safe='')}", token=token,
                 timeout=args.timeout)  # fmt: skip
        except ApiRefused as refused:
            err.write(f"fleetbeat forget: {ident}: {refused}\n")
            status = EXIT_REFUSED
            continue
        out.write(f"forgot {ident}\n")
    return status
