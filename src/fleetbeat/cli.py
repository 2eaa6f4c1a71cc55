"""The `fleetbeat` command line. The only place that turns errors into exit codes."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence
from typing import Optional

from fleetbeat import __version__
from fleetbeat.errors import ConfigError, FleetbeatError
from fleetbeat.logutil import JournalFormatter, is_journal_stream

EX_CONFIG = 78  # sysexits.h: a config error; systemd units do not restart on it

log = logging.getLogger("fleetbeat")


def _setup_logging(level: str = "info") -> None:
    """Human-readable lines with timestamps; under systemd, journald's `<N>` priority prefixes."""
    handler = logging.StreamHandler(sys.stderr)
    if is_journal_stream(sys.stderr):
        handler.setFormatter(JournalFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), handlers=[handler])


def _config_failed(err: ConfigError) -> int:
    count = len(err.problems)
    err_prefix = "<3>" if is_journal_stream(sys.stderr) else ""  # journalctl -p err shows it
    print(f"{err_prefix}fleetbeat: {count} config error{'s' if count > 1 else ''}:",
          file=sys.stderr)  # fmt: skip
    for line in err.problems:
        print(f"{err_prefix}  {line}", file=sys.stderr)
    return EX_CONFIG


def cmd_agent(args: argparse.Namespace) -> int:
    from fleetbeat.agent.config import load_agent_config
    from fleetbeat.agent.runtime import Agent

    config = load_agent_config(args.config)
    _setup_logging(args.log_level or config.agent.log_level)
    show = None
    if args.show:

        def show(name: str, payload: bytes, dropped: bool) -> None:
            status = "DROPPED" if dropped else "sent"
            text = payload.decode(errors="replace")
            print(f"{time.strftime('%H:%M:%S')} {status} -> {name}: {text}", flush=True)

    return Agent(config, show=show, sysfs_root=args.sysfs_root).run()


def cmd_collector(args: argparse.Namespace) -> int:
    from fleetbeat.collector.config import load_collector_config
    from fleetbeat.collector.service import Collector

    config = load_collector_config(args.config)
    _setup_logging(args.log_level or config.collector.log_level)
    return Collector(config).run()


def cmd_check_config(args: argparse.Namespace) -> int:
    from fleetbeat.agent.config import component_lines, parse_agent_config, signing_line
    from fleetbeat.collector.config import is_collector_document, parse_collector_config
    from fleetbeat.config.loader import read_toml
    from fleetbeat.config.render import table_lines

    data = read_toml(args.file)
    lines = [f"# {args.file}: valid. Effective configuration (defaults filled in):", ""]
    if is_collector_document(data):
        from fleetbeat.collector.expected import ExpectedError, load_expected

        collector = parse_collector_config(data, args.file).collector
        try:  # the file the collector would refuse to start with
            load_expected(collector)
        except ExpectedError as err:
            raise ConfigError([f"collector.expected_devices: {p}" for p in err.problems]) from None
        print("\n".join(lines + table_lines("[collector]", collector)))
        return 0
    config = parse_agent_config(data, args.file)
    lines += [f"# {signing_line(config.agent)}", ""]
    lines += table_lines("[agent]", config.agent)
    for comp in config.sensors:
        lines += ["", *component_lines(comp)]
    for out in config.outputs:
        lines += ["", *component_lines(out)]
    print("\n".join(lines))
    return 0


def cmd_sensors(args: argparse.Namespace) -> int:
    from fleetbeat.agent.config import load_agent_config
    from fleetbeat.commands.sensors import sensor_report

    config = load_agent_config(args.config)
    _setup_logging("warning")
    print(sensor_report(config, sysfs_root=args.sysfs_root, settle=args.settle))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from fleetbeat.commands import status

    try:
        return status.run(args.url, as_json=args.json, color=args.color, states=args.state,
                          tags=args.tag, timeout=args.timeout)  # fmt: skip
    except status.CollectorUnreachable as err:
        print(f"fleetbeat status: {err}\n  Is `fleetbeat collector` running there? "
              "Point --url (or FLEETBEAT_URL) at it.", file=sys.stderr)  # fmt: skip
        return status.EXIT_UNREACHABLE


def cmd_keygen(args: argparse.Namespace) -> int:
    from fleetbeat.commands.keygen import keygen

    print(keygen(args.device, args.out, force=args.force))
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from fleetbeat.commands import simulate

    return simulate.main(args)


def cmd_alerts(args: argparse.Namespace) -> int:
    from fleetbeat.commands import alerts, status

    try:
        if args.command == "alerts":
            return alerts.run_alerts(args.url, as_json=args.json, timeout=args.timeout)
        return alerts.run_silence(args)
    except status.CollectorUnreachable as err:
        print(f"fleetbeat {args.command}: {err}\n  Is `fleetbeat collector` running there? "
              "Point --url (or FLEETBEAT_URL) at it.", file=sys.stderr)  # fmt: skip
        return status.EXIT_UNREACHABLE


def build_parser() -> argparse.ArgumentParser:
    from fleetbeat.commands.alerts_args import add_parsers as alert_parsers
    from fleetbeat.commands.forget import add_parser as forget_parser
    from fleetbeat.commands.simulate import add_arguments as simulate_arguments

    parser = argparse.ArgumentParser(
        prog="fleetbeat",
        description="At-most-once heartbeats and telemetry for fleets of small Linux devices.",
    )
    parser.add_argument("--version", action="version", version=f"fleetbeat {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser(
        "agent",
        help="run the agent: sample, send heartbeats and readings",
        description="Run the agent. Without -c it runs on embedded defaults: heartbeats and "
        "system readings every 10 s as JSON over UDP to 127.0.0.1:9746. SIGHUP re-reads the "
        "config file (an invalid one is logged and ignored); SIGTERM sends bye and exits. "
        "Under systemd (Type=notify) it reports readiness and status and pings the watchdog.",
    )
    p.add_argument("-c", "--config", metavar="FILE", help="agent TOML file (default: none, "
                   "embedded defaults)")  # fmt: skip
    p.add_argument(
        "--show", action="store_true", help="print every payload on stdout, marked sent or DROPPED"
    )
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"),
                   help="override [agent] log_level")  # fmt: skip
    p.add_argument("--sysfs-root", default="/sys", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_agent)

    p = sub.add_parser(
        "collector",
        help="run the collector: receive heartbeats, track liveness and loss, serve HTTP",
        description="Run the collector. Without -c it runs on embedded defaults: wire v1 on "
        "UDP 0.0.0.0:9746, HTTP on 127.0.0.1:9747, state in $STATE_DIRECTORY or "
        "~/.local/state/fleetbeat. SIGTERM or SIGINT stop it after a last write of its state.",
    )
    p.add_argument("-c", "--config", metavar="FILE", help="collector TOML file (default: none, "
                   "embedded defaults)")  # fmt: skip
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"),
                   help="override [collector] log_level")  # fmt: skip
    p.set_defaults(func=cmd_collector)

    p = sub.add_parser(
        "check-config",
        help="validate a config file and print the effective config",
        description="Validate FILE (an agent file, or a collector file: one with a [collector] "
        "table); print the effective configuration with defaults filled in and secrets masked. "
        "Exit status 78 when it is invalid.",
    )
    p.add_argument("file", metavar="FILE")
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser(
        "sensors",
        help="read every configured sensor once and show what this device can report",
        description="Read every configured sensor once and print what this device can "
        "report, what it cannot, and why.",
    )
    p.add_argument("-c", "--config", metavar="FILE", help="agent TOML file (default: embedded "
                   "defaults)")  # fmt: skip
    p.add_argument("--settle", type=float, default=1.0, metavar="SECONDS",
                   help="time between the priming read and the real one (rates need two "
                   "samples; default 1)")  # fmt: skip
    p.add_argument("--sysfs-root", default="/sys", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_sensors)

    p = sub.add_parser(
        "status",
        help="show the fleet as a table, from a collector's API",
        description="Show every device the collector knows, most serious state first. Exit "
        "status: 0 when no device is down, 2 when at least one is down, 3 when the collector "
        "cannot be reached.",
    )
    p.add_argument("--url", default=os.environ.get("FLEETBEAT_URL", "http://127.0.0.1:9747"),
                   help="the collector's HTTP address (default: $FLEETBEAT_URL or "
                   "http://127.0.0.1:9747)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the API's JSON instead of a table")
    p.add_argument("--state", action="append", default=[], metavar="STATE",
                   choices=("up", "late", "down", "offline", "missing"),
                   help="only devices in this state (repeatable)")  # fmt: skip
    p.add_argument("--tag", action="append", default=[], metavar="KEY:VALUE",
                   help="only devices with this tag (repeatable; all must match)")  # fmt: skip
    p.add_argument("--color", choices=("auto", "always", "never"), default="auto",
                   help="colour the states (default: auto, only on a terminal)")  # fmt: skip
    p.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS",
                   help="how long to wait for the collector (default 5)")  # fmt: skip
    p.set_defaults(func=cmd_status)

    p = sub.add_parser(
        "keygen",
        help="write a new signing key (HMAC-SHA256) for a device or the whole fleet",
        description="Write a random 256-bit key, 64 hex digits on one line, to a new file "
        "with mode 0600, and print where to put it on the device and on the collector. "
        "With --device the key is that device's own (the collector's keys_dir); without, "
        "a fleet key (fleet_key_file).",
    )
    p.add_argument("--device", metavar="ID", help="the device the key is for (default: a "
                   "fleet key for every device)")  # fmt: skip
    p.add_argument("--out", metavar="FILE", help="where to write it (default: ./ID, or "
                   "./fleet.key); never overwritten unless --force")  # fmt: skip
    p.add_argument("--force", action="store_true", help="overwrite FILE if it exists")
    p.set_defaults(func=cmd_keygen)

    p = sub.add_parser(
        "simulate",
        help="send heartbeats from N simulated devices (demos, capacity tests)",
        description="Simulate a fleet from one process on one schedule (one UDP socket, one "
        "MQTT connection or a few HTTP ones): N devices sending wire v1 heartbeats on the "
        "agent's schedule, with loss, dead, flaky, rebooting and stopping devices drawn from "
        "a seed. Prints what it sent and dropped, and the CPU it used.",
    )
    simulate_arguments(p)
    p.set_defaults(func=cmd_simulate)

    alert_parsers(sub, cmd_alerts)  # fleetbeat alerts, fleetbeat silence add|list|rm
    forget_parser(sub)  # fleetbeat forget ID...
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as err:
        return _config_failed(err)
    except FleetbeatError as err:
        print(f"fleetbeat: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
