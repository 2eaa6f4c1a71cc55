"""`fleetbeat simulate`: its options and its run (the fleet itself is fleetbeat.simulate).

Kept apart so that parsing the command line imports nothing of the simulator's (random,
sockets, keys): `fleetbeat agent` on a Pi Zero pays for none of it.
"""

from __future__ import annotations

import argparse
import contextlib
import time

from fleetbeat.errors import FleetbeatError


class SimulateError(FleetbeatError):
    """Bad arguments for `fleetbeat simulate`."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The `simulate` command's options (the CLI registers them)."""
    p.add_argument(
        "--devices", type=int, default=50, metavar="N", help="how many devices (default 50)"
    )
    p.add_argument(
        "--to",
        default="127.0.0.1:9746",
        metavar="HOST:PORT",
        help="the collector's UDP address (default 127.0.0.1:9746)",
    )
    p.add_argument(
        "--transport",
        choices=("udp",),
        default="udp",
        help="how to send: udp (MQTT and HTTP to come)",
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
        help="devices that reboot every 20-40 intervals",
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


def main(args: argparse.Namespace) -> int:
    """Run a simulation from parsed arguments; print what was sent."""
    from fleetbeat import keys
    from fleetbeat.simulate import Fleet, udp_sender

    if args.devices < 1 or not 0.01 <= args.interval <= 86400 or not 0 <= args.loss <= 1:
        raise SimulateError("--devices >= 1, --interval 0.01-86400 and --loss 0-1, please")
    key, _, values = args.tags.partition("=")
    if args.tags and (not key or not values):
        raise SimulateError(f"--tags: expected KEY=V1,V2,..., got {args.tags!r}")
    sites = tuple(v for v in values.split(",") if v)
    try:
        fleet = Fleet(args.devices, interval=args.interval, loss=args.loss, dead=args.dead,
                      flaky=args.flaky, reboot=args.reboot, sites=sites, tag_key=key or "site",
                      key_dir=args.key_dir, seed=args.seed, prefix=args.prefix)  # fmt: skip
        send = udp_sender(args.to)
    except (ValueError, OSError, keys.KeyFileError) as err:
        raise SimulateError(str(err)) from None
    rate = args.devices / args.interval
    print(f"simulating {args.devices} devices every {args.interval:g} s ({rate:,.0f} "
          f"heartbeats/s) to udp://{args.to}", flush=True)  # fmt: skip
    cpu0 = time.process_time()
    t0 = time.monotonic()
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C ends a run of unlimited length
        fleet.run(send, seconds=args.seconds)
    wall = time.monotonic() - t0
    cpu = time.process_time() - cpu0
    print(
        f"sent {fleet.sent:,} heartbeats, withheld {fleet.lost:,} (loss, dead, flaky) in "
        f"{wall:.1f} s; CPU {cpu:.2f} s ({100 * cpu / max(wall, 1e-9):.1f}% of one core)"
    )
    return 0
