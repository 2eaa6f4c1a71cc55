"""`fleetbeat status`: real collector and agent subprocesses, then the command's output and exit."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

import pytest
from collector_helpers import CollectorProcess
from web import ServedFleet

from fleetbeat.commands import status
from helpers import AgentProcess, agent_toml, fleetbeat_cmd, free_port, run_cli, subprocess_env
from helpers import wait_until as wait

StartCollector = Callable[..., CollectorProcess]
StartAgent = Callable[..., AgentProcess]


def device_state(collector: CollectorProcess, dev: str) -> Any:
    devices = collector.api("/api/devices")["devices"]
    return next((d["state"] for d in devices if d["id"] == dev), None)


def test_up_is_exit_0_and_down_is_exit_2(
    start_collector: StartCollector, start_agent: StartAgent
) -> None:
    """A live agent lists as up with exit 0; once SIGKILLed and judged down, exit is 2."""
    collector = start_collector()
    url = wait(collector.http_url)  # logged once HTTP serves, just after the UDP line
    agent = start_agent(agent_toml(collector.udp_port, interval="0.1s", device="pi-status"))
    wait(lambda: device_state(collector, "pi-status") == "up", timeout=10)

    done = run_cli("status", "--url", url)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split()[:3] == ["DEVICE", "STATE", "LAST"]
    row = next(line for line in lines if line.startswith("pi-status"))
    assert row.split()[1] == "up"
    assert " s ago" in row
    assert lines[-1] == "1 device: 1 up"
    assert "\x1b" not in done.stdout  # piped: plain text

    done = run_cli("status", "--url", url, "--json")
    assert done.returncode == 0
    data = json.loads(done.stdout)
    assert [d["id"] for d in data["devices"]] == ["pi-status"]
    assert data["devices"][0]["received"] > 0

    agent.signal(signal.SIGKILL)
    agent.wait()
    wait(lambda: device_state(collector, "pi-status") == "down", timeout=10)
    done = run_cli("status", "--url", url)
    assert done.returncode == status.EXIT_DOWN == 2
    row = next(line for line in done.stdout.splitlines() if line.startswith("pi-status"))
    assert row.split()[1] == "down"
    assert done.stdout.splitlines()[-1] == "1 device: 1 down"
    assert run_cli("status", "--url", url, "--json").returncode == 2


def test_filters_and_ordering_with_several_devices(
    start_collector: StartCollector, start_agent: StartAgent
) -> None:
    """Down devices come first; --state and --tag narrow the list (and the exit status)."""
    collector = start_collector()
    url = wait(collector.http_url)  # logged once HTTP serves, just after the UDP line
    lab = '[agent]\ntags = { site = "lab" }\n'
    agents = {
        "a-alive": start_agent(agent_toml(collector.udp_port, device="a-alive")),
        "z-doomed": start_agent(
            agent_toml(collector.udp_port, device="z-doomed").replace("[agent]\n", lab)
        ),
    }
    wait(lambda: device_state(collector, "z-doomed") == "up", timeout=10)
    wait(lambda: device_state(collector, "a-alive") == "up", timeout=10)
    agents["z-doomed"].signal(signal.SIGKILL)
    wait(lambda: device_state(collector, "z-doomed") == "down", timeout=10)

    done = run_cli("status", "--url", url)
    assert done.returncode == 2
    rows = [line.split()[0] for line in done.stdout.splitlines()[1:] if line.strip()][:2]
    assert rows == ["z-doomed", "a-alive"]  # down before up, whatever the names

    done = run_cli("status", "--url", url, "--state", "up")
    assert done.returncode == 0  # the down device is filtered out
    assert "z-doomed" not in done.stdout and "a-alive" in done.stdout

    done = run_cli("status", "--url", url, "--tag", "site:lab")
    assert done.returncode == 2
    assert "z-doomed" in done.stdout and "a-alive" not in done.stdout
    assert "site:lab" in done.stdout

    done = run_cli("status", "--url", url, "--tag", "site:nowhere")
    assert done.returncode == 0
    assert done.stdout.startswith("no devices")


def test_unreachable_collector_is_exit_3_with_a_clear_message() -> None:
    """Nothing listening: exit 3, a message naming the URL, nothing on stdout."""
    port = free_port(kind=socket.SOCK_STREAM)  # a TCP port nobody listens on
    done = run_cli("status", "--url", f"http://127.0.0.1:{port}", "--timeout", "2")
    assert done.returncode == status.EXIT_UNREACHABLE == 3
    assert done.stdout == ""
    assert f"cannot reach the collector at http://127.0.0.1:{port}" in done.stderr
    assert "Connection refused" in done.stderr


@pytest.fixture
def not_a_collector() -> Iterator[str]:
    """A real HTTP server that answers every GET with an HTML page."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"<html>hello</html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_something_else_answering_is_exit_3(not_a_collector: str) -> None:
    """An HTTP server that is not a collector is reported, not shown as an empty fleet."""
    done = run_cli("status", "--url", not_a_collector)
    assert done.returncode == 3
    assert "did not answer JSON" in done.stderr


def test_colour_on_a_terminal_plain_when_piped() -> None:
    """On a real pseudo-terminal the states are coloured; NO_COLOR or a pipe turns that off."""
    served = ServedFleet()
    try:
        served.hb("tty-dev", 0)

        def on_pty(**env: str) -> str:
            master, slave = pty.openpty()
            proc = subprocess.Popen(
                fleetbeat_cmd("status", "--url", served.url),
                stdout=slave, stderr=subprocess.STDOUT, env=subprocess_env(**env),
            )  # fmt: skip
            os.close(slave)
            out = b""
            while True:
                ready, _, _ = select.select([master], [], [], 10)
                if not ready:
                    break
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
            os.close(master)
            assert proc.wait(10) == 0
            return out.decode()

        coloured = on_pty()
        assert "\x1b[32mup" in coloured
        assert "\x1b" not in on_pty(NO_COLOR="1")
        piped = run_cli("status", "--url", served.url)
        assert "\x1b" not in piped.stdout and "tty-dev" in piped.stdout
        forced = run_cli("status", "--url", served.url, "--color", "always")
        assert "\x1b[32mup" in forced.stdout
    finally:
        served.close()


def test_table_from_the_real_fleet() -> None:
    """render_table aligns columns, puts down first, shows loss % and `N s ago`."""
    served = ServedFleet(down_after=3)
    try:
        for seq in (0, 1, 3):  # seq 2 lost: 25 % of 4 expected
            served.hb("b-lossy", seq, interval=100, tags={"site": "lab"})
        served.hb("a-silent", 0)
        served.advance(12.0)
        data = served.fleet.devices()
        text = status.render_table({"time": served.clock.now, "devices": data})
    finally:
        served.close()
    lines = text.splitlines()
    assert lines[0].split() == ["DEVICE", "STATE", "LAST", "SEEN", "LOSS", "RECENT",
                                "RESTARTS", "REBOOTS", "ADDRESS", "TAGS"]  # fmt: skip
    assert lines[1].split()[:4] == ["a-silent", "down", "12", "s"]
    assert lines[2].split() == [
        "b-lossy", "up", "12", "s", "ago", "25%", "25%", "0", "0", "127.0.0.1:40000", "site:lab",
    ]  # fmt: skip
    assert lines[1].index("down") == lines[2].index("up") == lines[0].index("STATE")
    assert lines[-1] == "2 devices: 1 down, 1 up"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "never"), (-3, "0 s ago"), (12.4, "12 s ago"), (89, "89 s ago"), (150, "2 min ago"),
     (7200, "2 h ago"), (3 * 86400, "3 d ago")],
)  # fmt: skip
def test_ago_reads_like_a_person_would_say_it(seconds: Any, text: str) -> None:
    """Last-seen ages are rounded to the unit a person would use."""
    assert status.ago(seconds) == text
