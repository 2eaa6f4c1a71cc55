"""`fleetbeat simulate`: its options and its run (the fleet itself is fleetbeat.simulate).

Kept apart so that parsing the command line imports nothing of the simulator's (random,
sockets, keys): `fleetbeat agent` on a Pi Zero pays for none of it.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from typing import TYPE_CHECKING, Any

from fleetbeat.errors import FleetbeatError

if TYPE_CHECKING:
    from fleetbeat.simulate import Transport


class SimulateError(FleetbeatError):
    """Bad arguments for `fleetbeat simulate`."""


DEFAULT_TO = {
    "udp": "127.0.0.1:9746",
    "mqtt": "127.0.0.1:1883",
    "http": "http://127.0.0.1:9748/ingest",
}
TOPIC_PREFIX = r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*"  # as the agent's [outputs.mqtt]
MAX_DEVICES = 1_000_000
EX_USAGE = 2  # as argparse exits on a bad command line


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The `simulate` command's options (the CLI registers them)."""
    p.epilog = (
        "Transports: udp sends one datagram per message from one socket. mqtt publishes "
        "every device's heartbeats at QoS 0 on ONE connection to {prefix}/{device}/hb; it "
        "does not simulate a session per device, so there is no per-device Last Will (a "
        "dead device goes down, never offline by its Will), no retained status and no "
        "readings. http POSTs each message to the collector's http_ingest_listen on "
        "--connections keep-alive connections, one request in flight on each. Every "
        "transport sends at once or drops and counts (at most once, as the agent): "
        "nothing is queued or retried. --key-dir signs on every transport."
    )
    p.add_argument(
        "--devices",
        type=int,
        default=50,
        metavar="N",
        help=f"how many devices (default 50, at most {MAX_DEVICES:,})",
    )
    p.add_argument(
        "--transport",
        choices=("udp", "mqtt", "http"),
        default="udp",
        help="how to send (default udp; see below)",
    )
    p.add_argument(
        "--to",
        metavar="ADDRESS",
        help="udp: the collector's HOST:PORT (default 127.0.0.1:9746); mqtt: the broker's "
        "HOST:PORT (default 127.0.0.1:1883); http: the ingest URL (default "
        "http://127.0.0.1:9748/ingest)",
    )
    p.add_argument(
        "--connections",
        type=int,
        metavar="N",
        help="http only: keep-alive connections, 1-16 (default 2)",
    )
    p.add_argument(
        "--topic-prefix",
        metavar="PREFIX",
        help="mqtt only: the collector's [collector.mqtt] topic_prefix (default fleetbeat)",
    )
    p.add_argument(
        "--username",
        metavar="USER",
        help="mqtt only: the broker user; the password is $FLEETBEAT_MQTT_PASSWORD",
    )
    p.add_argument(
        "--interval",
        type=float,
        default=10.0,
        metavar="S",
        help="heartbeat interval in seconds (default 10)",
    )
    p.add_argument(
        "--loss",
        type=float,
        default=0.0,
        metavar="P",
        help="mean share of heartbeats lost, 0-1; each device draws its own "
        "from [0, 2P] (default 0)",
    )
    p.add_argument(
        "--dead",
        type=int,
        default=0,
        metavar="K",
        help="devices that fall silent for good after 3-10 intervals",
    )
    p.add_argument(
        "--flaky",
        type=int,
        default=0,
        metavar="K",
        help="devices that drop out for 3-8 intervals now and then",
    )
    p.add_argument(
        "--reboot",
        type=int,
        default=0,
        metavar="K",
        help="devices that reboot every 20-40 intervals (a bye, 1-3 silent intervals, "
        "then a new run and boot time)",
    )
    p.add_argument(
        "--offline",
        type=int,
        default=0,
        metavar="K",
        help="devices that stop cleanly (a bye) after 3-10 intervals: offline, not down",
    )
    p.add_argument(
        "--tags",
        default="",
        metavar="KEY=V1,V2,...",
        help="spread the devices over these tag values, e.g. site=a,b,c",
    )
    p.add_argument("--prefix", default="sim", help="device ids are PREFIX-0001... (default sim)")
    p.add_argument(
        "--key-dir",
        metavar="DIR",
        help="sign with per-device keys from DIR/<id> (missing ones are created: "
        "point the collector's keys_dir at DIR)",
    )
    p.add_argument(
        "--seconds",
        type=float,
        default=float("inf"),
        metavar="S",
        help="stop after S seconds (default: until interrupted)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed for faults and offsets")


class UsageError(SimulateError):
    """A bad command line: said with the option's name, exit status 2."""


def _host_port(option: str, text: str) -> tuple[str, int]:
    """("host", port) of "host:port" or "[v6]:port"; UsageError naming `option` otherwise."""
    if "://" in text:
        raise UsageError(f"{option}: {text!r} is a URL, which only --transport http takes; "
                         "udp and mqtt take HOST:PORT")  # fmt: skip
    host, _, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host or (":" in host and not text.startswith("[")) or not port.isdigit():
        raise UsageError(f"{option}: expected HOST:PORT (or [IPv6]:PORT), got {text!r}")
    if not 1 <= int(port) <= 65535:
        raise UsageError(f"{option}: port {port} is not in 1-65535")
    return host, int(port)


def _url(text: str) -> str:
    """An http:// or https:// URL with a host, no credentials; UsageError otherwise."""
    import urllib.parse

    what = "expected an http:// or https:// URL such as http://127.0.0.1:9748/ingest"
    try:
        parts = urllib.parse.urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise UsageError(f"--to: {what}, got {text!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.fragment:
        raise UsageError(f"--to: {what}, got {text!r}")
    if parts.username is not None or parts.password is not None:
        raise UsageError("--to: no credentials in the URL; the token is $FLEETBEAT_HTTP_TOKEN")
    return text


def check_arguments(args: argparse.Namespace) -> str:
    """Check the options together; the target (`--to` or the transport's default)."""
    if not 1 <= args.devices <= MAX_DEVICES:
        raise UsageError(f"--devices: 1 to {MAX_DEVICES:,}, got {args.devices}")
    if not 0.01 <= args.interval <= 86400:  # NaN fails too
        raise UsageError(f"--interval: 0.01 to 86400 seconds, got {args.interval:g}")
    if not 0 <= args.loss <= 1:
        raise UsageError(f"--loss: a share from 0 to 1, got {args.loss:g}")
    if not args.seconds > 0:
        raise UsageError(f"--seconds: more than 0, got {args.seconds:g}")
    for name in ("dead", "flaky", "reboot", "offline"):
        if getattr(args, name) < 0:
            raise UsageError(f"--{name}: cannot be negative")
    if args.dead + args.flaky + args.reboot + args.offline > args.devices:
        raise UsageError("--dead + --flaky + --reboot + --offline is more than --devices")
    key, _, values = args.tags.partition("=")
    if args.tags and (not key or not values.strip(",")):
        raise UsageError(f"--tags: expected KEY=V1,V2,..., got {args.tags!r}")
    transport = args.transport
    only = {"--connections": ("http", args.connections),
            "--topic-prefix": ("mqtt", args.topic_prefix),
            "--username": ("mqtt", args.username)}  # fmt: skip
    for option, (needs, value) in only.items():
        if value is not None and transport != needs:
            raise UsageError(f"{option} is for --transport {needs}, not {transport}")
    if args.connections is not None and not 1 <= args.connections <= 16:
        raise UsageError(f"--connections: 1 to 16, got {args.connections}")
    if args.topic_prefix is not None and not re.fullmatch(TOPIC_PREFIX, args.topic_prefix):
        raise UsageError("--topic-prefix: topic levels of A-Z a-z 0-9 _ . - joined by /, got "
                         f"{args.topic_prefix!r}")  # fmt: skip
    target = args.to or DEFAULT_TO[transport]
    if transport == "http":
        if "://" not in target:
            raise UsageError(f"--to: --transport http takes the ingest URL, such as "
                             f"http://{target}/ingest, not {target!r}")  # fmt: skip
        return _url(target)
    _host_port("--to", target)
    return target


def make_transport(args: argparse.Namespace, target: str) -> Transport:
    """The transport the checked options ask for (not started)."""
    from fleetbeat import simulate_send

    if args.transport == "http":
        return simulate_send.HttpTransport(target, connections=args.connections or 2)
    host, port = _host_port("--to", target)
    if args.transport == "mqtt":
        password = os.environ.get("FLEETBEAT_MQTT_PASSWORD") if args.username else None
        prefix = args.topic_prefix or "fleetbeat"
        return simulate_send.MqttTransport(host, port, topic_prefix=prefix,
                                           username=args.username, password=password)  # fmt: skip
    return simulate_send.UdpTransport(host, port)


def main(args: argparse.Namespace) -> int:
    """Run a simulation from parsed arguments; print what was sent."""
    try:
        target = check_arguments(args)
    except UsageError as err:
        print(f"fleetbeat simulate: error: {err}", file=sys.stderr)
        return EX_USAGE
    return _run(args, target)


def _run(args: argparse.Namespace, target: str) -> int:
    import signal

    from fleetbeat import keys
    from fleetbeat.simulate import Fleet

    key, _, values = args.tags.partition("=")
    sites = tuple(v for v in values.split(",") if v)
    try:
        fleet = Fleet(args.devices, interval=args.interval, loss=args.loss, dead=args.dead,
                      flaky=args.flaky, reboot=args.reboot, offline=args.offline, sites=sites,
                      tag_key=key or "site", key_dir=args.key_dir, seed=args.seed,
                      prefix=args.prefix)  # fmt: skip
    except ValueError as err:
        raise SimulateError(str(err)) from None
    except (OSError, keys.KeyFileError) as err:  # only --key-dir touches files
        raise SimulateError(f"--key-dir {args.key_dir}: {err}") from None
    try:
        transport = make_transport(args, target)
    except (ValueError, OSError) as err:  # e.g. a name that does not resolve
        raise SimulateError(f"--to {target}: {err}") from None
    where = target if "://" in target else f"{args.transport}://{target}"
    rate = args.devices / args.interval
    print(f"simulating {args.devices} devices every {args.interval:g} s ({rate:,.0f} "
          f"heartbeats/s) to {where}", flush=True)  # fmt: skip
    cpu0 = time.process_time()
    t0 = time.monotonic()
    previous = signal.signal(signal.SIGTERM, _interrupt)  # scripts/run --demo stops us so
    try:
        transport.start()
        deadline = time.monotonic() + 10.0
        while not transport.ready() and time.monotonic() < deadline:
            time.sleep(0.02)
        if not transport.ready():
            print(f"{transport.name}: not connected after 10 s; sending anyway (dropped and "
                  "counted until it is)", file=sys.stderr, flush=True)  # fmt: skip
        fleet.run(transport, seconds=args.seconds)
    except KeyboardInterrupt:  # Ctrl-C (or SIGTERM) ends a run of unlimited length
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        transport.close()
    wall = time.monotonic() - t0
    cpu = time.process_time() - cpu0
    snap = transport.snapshot()
    reasons = ", ".join(f"{r} {n:,}" for r, n in sorted(snap["by_reason"].items()))
    print(
        f"sent {snap['sent']:,} messages, dropped {snap['dropped']:,}"
        f"{f' ({reasons})' if reasons else ''}, withheld {fleet.withheld:,} on purpose "
        f"(loss, dead, flaky, offline, rebooting) in {wall:.1f} s; CPU {cpu:.2f} s "
        f"({100 * cpu / max(wall, 1e-9):.1f}% of one core)"
    )
    return 0


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt
