"""The HTTP output against real servers: one in flight, drops by reason, keep-alive, TLS, VM."""

from __future__ import annotations

import contextlib
import json
import logging
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from http_helpers import IDENTITY, Server, make_output

from encoders.conftest import victoria_metrics  # noqa: F401 - the fixture, shared
from fleetbeat.agent.config import parse_agent_config
from fleetbeat.agent.pipeline import Emitter
from fleetbeat.config.frozen import fields
from fleetbeat.config.loader import parse_toml
from fleetbeat.config.secrets import TlsConfig
from fleetbeat.errors import ConfigError
from fleetbeat.outputs.base import Outgoing
from fleetbeat.outputs.http_post import HttpConfig
from fleetbeat.outputs.json_wire import JsonEncoder
from helpers import ROOT, agent_toml, free_port, run_cli, subprocess_env, wait_until

HB = b'{"v":1,"k":"hb"}'


@pytest.fixture
def server():
    s = Server()
    yield s
    s.stop()


@pytest.fixture
def outputs():
    made = []

    def make(url, **kw):
        out = make_output(url, **kw)
        made.append(out)
        return out

    yield make
    for out in made:
        out.close(timeout=1)


def test_each_payload_is_posted_with_its_content_type_token_and_headers(server, outputs, tmp_path):
    """JSON goes as application/json, lines as text/plain, with the bearer token and headers."""
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    out = outputs(server.url + "?db=x", token_file=str(token), headers={"X-Site": "lab"})
    wait_until(out.ready)
    out.send(HB)
    wait_until(out.ready)
    out.send(b"cpu v=1 1000")
    wait_until(lambda: out.tally.sent == 2)
    (path1, h1, b1), (_, h2, b2) = server.requests
    assert (path1, b1, b2) == ("/ingest?db=x", HB, b"cpu v=1 1000")
    assert h1["Content-Type"] == "application/json"
    assert h2["Content-Type"] == "text/plain; charset=utf-8"
    assert h1["Authorization"] == "Bearer s3cret" and h1["X-Site"] == "lab"
    assert server.connections == 1, "both requests on one keep-alive connection"
    assert out.tally.dropped == 0


@pytest.mark.parametrize("pending", [1, 4])
def test_payloads_past_max_pending_are_dropped_as_busy(server, outputs, pending):
    """While the server has not answered, past max_pending payloads every new one is busy."""
    out = outputs(server.url, max_pending=pending)
    wait_until(out.ready)
    server.hold.clear()
    out.send(HB)
    assert server.arrived.wait(5)
    for _ in range(5):
        out.send(HB)
    server.hold.set()
    wait_until(lambda: out.tally.sent == pending)
    assert out.tally.by_reason == {"busy": 6 - pending}
    wait_until(out.ready)
    assert len(server.requests) == pending, "one request at a time, each once"


def test_a_reading_and_the_heartbeat_of_one_tick_both_arrive(server, outputs):
    """Sent back to back, as a tick sends them, neither is busy with the default max_pending."""
    out = outputs(server.url)
    for _ in range(20):
        wait_until(out.ready)
        out.send(b'{"k":"rd"}')
        out.send(HB)
    wait_until(lambda: out.tally.sent == 40)
    assert out.tally.dropped == 0 and server.connections == 1


def test_payloads_are_dropped_with_the_reason_there_is_no_connection(outputs):
    """Before the first connect: not_connected; after a refused one: refused; a bad name: unresolved."""
    refused = outputs(f"http://127.0.0.1:{free_port(socket.SOCK_STREAM)}/", reconnect_min="5s")
    unresolved = outputs("http://no-such-host.invalid/", reconnect_min="5s")
    for out, reason in ((refused, "refused"), (unresolved, "unresolved")):
        wait_until(lambda out=out, reason=reason: _drop_reason(out) == reason, timeout=10)
        out.send(HB)
        assert out.tally.by_reason[reason] >= 1
        assert out.tally.sent == 0


def _drop_reason(out):
    before = dict(out.tally.by_reason)
    out.send(HB)
    return next(r for r, n in out.tally.by_reason.items() if n != before.get(r, 0))


def test_4xx_and_5xx_are_dropped_by_class_with_the_first_status_logged(server, outputs, caplog):
    """A 400 counts as http_4xx and a 503 as http_5xx; the log shows the status and body."""
    caplog.set_level(logging.WARNING, "fleetbeat.outputs")
    out = outputs(server.url)
    server.status, server.body = 400, b"cannot parse line 1"
    for _ in range(3):
        wait_until(out.ready)
        out.send(HB)
    wait_until(lambda: out.tally.dropped == 3)
    server.status = 503
    wait_until(out.ready)
    out.send(HB)
    wait_until(lambda: out.tally.dropped == 4)
    assert out.tally.by_reason == {"http_4xx": 3, "http_5xx": 1}
    text = [r.getMessage() for r in caplog.records]
    assert sum("400 Bad Request: cannot parse line 1" in t for t in text) == 1, text
    assert sum("503 Service Unavailable" in t for t in text) == 1, text


def test_no_answer_in_time_is_a_timeout_and_the_next_connection_carries_on(server, outputs):
    """A request unanswered within `timeout` is dropped as timeout; later ones go out again."""
    out = outputs(server.url, timeout="0.3s")
    wait_until(out.ready)
    server.hold.clear()
    out.send(HB)
    wait_until(lambda: out.tally.by_reason.get("timeout") == 1)
    server.hold.set()
    wait_until(out.ready)
    out.send(HB)
    wait_until(lambda: out.tally.sent == 1)
    assert out.tally.by_reason == {"timeout": 1}


def test_an_idle_connection_closed_by_the_server_is_made_again_before_the_next_payload(outputs):
    """The server closes each connection after 0.2 s idle: no payload is ever lost to it."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted = []

    def serve():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            accepted.append(conn)
            threading.Thread(target=_answer_then_idle_close, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    out = outputs(f"http://127.0.0.1:{listener.getsockname()[1]}/")
    try:
        for i in range(1, 4):
            wait_until(lambda i=i: len(accepted) == i and out.ready())
            out.send(HB)
            wait_until(lambda i=i: out.tally.sent == i)
            # the server closes it after 0.2 s idle; the output connects again by itself
            wait_until(lambda i=i: len(accepted) == i + 1, timeout=5)
        assert out.tally.dropped == 0, out.tally.by_reason
    finally:
        listener.close()


def _answer_then_idle_close(conn):
    with conn:
        data = b""
        while b"\r\n\r\n" not in data:
            data += conn.recv(4096)
        conn.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")
        conn.settimeout(0.2)
        with contextlib.suppress(OSError):  # idle too long: closed, as nginx and Go servers do
            conn.recv(4096)


def test_a_server_closing_after_every_answer_loses_nothing_uncounted(server, outputs):
    """With Connection: close on every answer, each message is received or dropped and counted."""
    server.close_each = True
    out = outputs(server.url)
    wait_until(out.ready)
    sent = 300
    for i in range(sent):
        if i % 2 == 0:  # every other one waits for the new connection; the rest do not
            wait_until(out.ready)
        out.send(b'{"i":%d}' % i)
        wait_until(lambda i=i: out.tally.sent + out.tally.dropped == i + 1)
    wait_until(lambda: out.ready() and out.tally.sent == len(server.requests))
    received = {json.loads(b)["i"] for b in server.bodies()}
    assert len(received) == len(server.requests) == out.tally.sent
    assert out.tally.sent + out.tally.dropped == sent
    assert set(out.tally.by_reason) <= {"busy", "not_connected"}, out.tally.by_reason
    assert out.tally.sent >= sent // 2
    assert server.connections >= out.tally.sent, "a connection for every answer"


def test_tls_with_a_generated_ca_and_a_wrong_one(tls_files, outputs, caplog):
    """https with the right CA posts; with another CA every payload is dropped as tls, logged once."""
    caplog.set_level(logging.INFO, "fleetbeat.outputs")
    server = Server(tls=tls_files)
    try:
        good = outputs(server.url, tls={"ca_file": str(tls_files["ca"])})
        bad = outputs(server.url.replace("127.0.0.1", "localhost"), reconnect_min="0.05s",
                      reconnect_max="0.1s", tls={"ca_file": str(tls_files["other_ca"])})  # fmt: skip
        for n in range(1, 4):
            wait_until(good.ready)  # TLS 1.3 session tickets arrive on the idle socket
            good.send(HB)
            wait_until(lambda n=n: good.tally.sent == n)
        assert server.bodies() == [HB] * 3
        assert good.connects == 1, "session tickets on the idle socket are not a close"
        wait_until(lambda: bad.failed_connects >= 5 and _drop_reason(bad) == "tls")
        assert bad.connects == 0
        failures = [r.getMessage() for r in caplog.records if "cannot connect" in r.getMessage()]
        assert len(failures) == 1, failures
        assert "TLS: unable to get local issuer certificate (tls)" in failures[0]
    finally:
        server.stop()


def test_config_refuses_credentials_in_the_url_tls_on_http_and_reserved_headers():
    """Each mistake is named with its key path; headers are masked by check-config."""
    toml = """
[[outputs.http]]
url = "http://user:pw@host/x"
[[outputs.http]]
url = "http://host/x"
headers = { Host = "other", Authorization = "Token abc" }
token_file = "/t"
[outputs.http.tls]
"""
    with pytest.raises(ConfigError) as err:
        parse_agent_config(parse_toml(toml, "t.toml"), "t.toml", check_files=False)
    text = str(err.value)
    assert "outputs.http[0].url: no credentials in the URL" in text
    assert 'outputs.http[1].headers: "host" is set by the output itself' in text
    assert "outputs.http[1].token_file: and headers.Authorization" in text
    assert "outputs.http[1].tls: needs an https:// url" in text


def test_check_config_never_prints_header_values(tmp_path):
    """A token written in headers stays out of check-config's output."""
    cfg = tmp_path / "agent.toml"
    cfg.write_text('[[outputs.http]]\nurl = "http://vm:8428/write"\n'
                   '[outputs.http.headers]\nAuthorization = "Token very-secret"\n')  # fmt: skip
    result = run_cli("check-config", str(cfg))
    assert result.returncode == 0, result.stderr
    assert "very-secret" not in result.stdout + result.stderr


PROBE = """
import sys
from fleetbeat.agent.runtime import Agent
from fleetbeat.agent.config import load_agent_config
agent = Agent(load_agent_config(sys.argv[1]))
agent.start()
agent.send_heartbeat()
agent.shutdown()
print(" ".join(sorted(sys.modules)))
"""


@pytest.mark.parametrize(("output", "loaded", "absent"), [
    ('[[outputs.udp]]\nport = 9\n', set(), {"fleetbeat.outputs.http_post", "http.client", "ssl"}),
    ('[[outputs.http]]\nurl = "http://127.0.0.1:9/"\n', {"fleetbeat.outputs.http_post"},
     {"http.client", "ssl"}),
    ('[[outputs.http]]\nurl = "https://127.0.0.1:9/"\n', {"ssl"}, {"http.client"}),
], ids=["udp", "http", "https"])  # fmt: skip
def test_http_code_and_ssl_are_imported_only_when_configured(tmp_path, output, loaded, absent):
    """A UDP-only agent loads no HTTP code; an http:// output loads no ssl; https:// does."""
    cfg = tmp_path / "agent.toml"
    cfg.write_text("[agent]\njitter = 0\n" + output)
    out = subprocess.run([sys.executable, "-c", PROBE, str(cfg)], env=subprocess_env(),
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    modules = set(out.split())
    assert loaded <= modules and not modules & absent


def vm_toml(vm, *, udp_port, system_interval="0.1s", interval="0.1s"):
    """An agent posting line protocol to VM's /write; heartbeats also over UDP, to time them."""
    http = f'[[outputs.http]]\nurl = "{vm.http}/write"\nformat = "influx"\n'
    return agent_toml(udp_port, interval=interval, system=f'interval = "{system_interval}"',
                      extra=http)  # fmt: skip


def test_influx_lines_reach_victoria_metrics_and_read_back(victoria_metrics, start_agent,  # noqa: F811
                                                           udp_receiver):  # fmt: skip
    """A real agent posts line protocol to VictoriaMetrics' /write; /api/v1/export shows it."""
    vm = victoria_metrics
    agent = start_agent(vm_toml(vm, udp_port=udp_receiver.port))
    series = vm.wait_for(20, '{device="test-dev"}', timeout=15)
    assert sum(map(len, series.values())) >= 20, (series, agent.log())
    names = {dict(key)["__name__"] for key in series}
    assert any("cpu" in n for n in names), names
    assert "http_4xx" not in agent.log() and "http_5xx" not in agent.log()


def test_wire_json_to_victoria_metrics_is_a_real_4xx(victoria_metrics):  # noqa: F811
    """VM's remote-write path refuses wire v1 JSON with a 400: each message counts as http_4xx.

    (VictoriaMetrics 1.79 answers 204 on `/write` and `/api/v1/import` even to lines it
    cannot parse, logging and skipping them: only its own log shows that mistake.)
    """
    out = make_output(f"{victoria_metrics.http}/api/v1/write")
    try:
        emitter = Emitter(out, JsonEncoder(IDENTITY, prefix="fleetbeat"))
        for _ in range(3):
            wait_until(out.ready)
            emitter.emit(Outgoing("hb", ts=time.time(), interval=10.0, metrics={"cpu": 1.0}))
        wait_until(lambda: out.tally.dropped == 3)
        assert out.tally.by_reason == {"http_4xx": 3} and out.tally.sent == 0
    finally:
        out.close()


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


@pytest.mark.slow
def test_a_stalled_server_costs_no_memory_and_never_delays_heartbeats(
    victoria_metrics,  # noqa: F811 - the fixture imported above
    start_agent,
    udp_receiver,
):
    """VM frozen 20 s under 100 msg/s: heartbeats on time, RSS flat, drops counted, resume < 5 s."""
    vm = victoria_metrics
    config = vm_toml(vm, udp_port=udp_receiver.port, system_interval="0.01s", interval="0.5s")
    agent = start_agent(config)
    vm.wait_for(50, '{device="test-dev"}', timeout=15)
    time.sleep(2.0)  # steady state: allocator arenas and caches warmed
    before = rss_kib(agent.pid)
    udp_receiver.poll()
    udp_receiver.datagrams.clear()
    frozen_at = time.time()
    vm.proc.send_signal(signal.SIGSTOP)
    peak = before
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            udp_receiver.poll(0.25)
            peak = max(peak, rss_kib(agent.pid))
    finally:
        vm.proc.send_signal(signal.SIGCONT)
    thawed = time.time()
    series = None
    while time.time() < thawed + 5:
        series = vm.series('{device="test-dev"}')
        if any(ts / 1000 > thawed for s in series.values() for ts, _ in s):
            break
        urllib_flush(vm)
    resumed = time.time() - thawed
    hb = [m["ts"] for m in udp_receiver.messages() if m["k"] == "hb" and m["ts"] >= frozen_at]
    gaps = [b - a for a, b in zip(hb, hb[1:])]
    log = agent.log()
    print(f"RSS +{peak - before} KiB; max heartbeat gap {max(gaps):.3f} s; resumed {resumed:.2f} s")
    assert len(hb) >= 38 and max(gaps) <= 0.55, gaps
    assert peak - before < 256, f"RSS grew {peak - before} KiB"
    assert "(busy" in log and "(timeout" in log, log
    assert resumed < 5, series


def urllib_flush(vm):
    import urllib.request

    with urllib.request.urlopen(f"{vm.http}/internal/force_flush", timeout=5):  # noqa: S310
        pass
    time.sleep(0.1)


def test_example_file_parses_and_shows_every_key():
    """examples/agent-http.toml is valid and sets or comments every HTTP output key."""
    path = ROOT / "examples" / "agent-http.toml"
    config = parse_agent_config(parse_toml(path.read_text(), str(path)), str(path),
                                check_files=False)  # fmt: skip
    assert [c.format for c in config.outputs] == ["json", "influx"]
    text = path.read_text()
    names = [f.name for f in fields(HttpConfig)] + [f.name for f in fields(TlsConfig)]
    for name in names:
        assert re.search(rf"^(# )?{name} = |^\[outputs\.http\.{name}\]", text, re.M), name
