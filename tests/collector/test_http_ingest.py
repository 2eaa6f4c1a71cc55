"""The collector's HTTP ingest: wire v1 over POST /ingest, answered 204/400/413/429, counted."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import threading
import time
import urllib.request

import pytest
from collector_helpers import Sender

from fleetbeat import wire
from fleetbeat.collector.config import CollectorSection, parse_collector_config
from fleetbeat.collector.fleet import Fleet
from fleetbeat.collector.httpserver import Limits
from fleetbeat.collector.metrics import render
from fleetbeat.collector.receivers.http_ingest import HttpIngest
from fleetbeat.errors import ConfigError
from helpers import agent_toml, free_port, wait_until

MESSAGES = Sender(9, dev="http-dev")  # builds messages; its socket is never used


def hb(seq, **fields):
    return wire.dumps(MESSAGES.message(seq, **fields))


@pytest.fixture
def ingest():
    """An ingest listener on a free loopback port, feeding a real Fleet."""
    config = CollectorSection(http_ingest_listen="127.0.0.1:0", http_ingest_max_body=4096,
                              max_payload=1024)  # fmt: skip
    rx = HttpIngest(fleet=Fleet(config), config=config)
    rx.start()
    yield rx
    rx.close()


def post(rx, body, path="/ingest", method="POST"):
    """(status, parsed JSON body or None) of one request to the listener."""
    conn = http.client.HTTPConnection(*rx.address, timeout=5)
    try:
        conn.request(method, path, body=body)
        resp = conn.getresponse()
        raw = resp.read()
        return resp.status, json.loads(raw) if raw else None, dict(resp.getheaders())
    finally:
        conn.close()


def test_one_message_is_applied_and_answered_204(ingest):
    """A heartbeat posted once is in the fleet, by transport http, before the 204 arrives."""
    status, body, _ = post(ingest, hb(0))
    assert (status, body) == (204, None)
    dev = ingest.fleet.device("http-dev")
    assert dev is not None and dev["transport"] == "http" and dev["addr"].startswith("127.0.0.1")
    stats = ingest.fleet.stats()
    assert stats["received"]["http"] == 1 and stats["accepted"]["http"] == 1


def test_a_batch_of_messages_separated_by_newlines_is_applied_in_order(ingest):
    """Three heartbeats in one body count as three, with contiguous seqs and no loss."""
    status, _, _ = post(ingest, b"\n".join(hb(i) for i in range(3)) + b"\r\n")
    assert status == 204
    dev = ingest.fleet.device("http-dev")
    assert (dev["received"], dev["lost"]) == (3, 0)


def test_bad_input_gets_400_with_the_reasons_and_the_good_messages_still_count(ingest):
    """Garbage and a wrong version are named by line and counted as for UDP; line 1 applies."""
    body = hb(0) + b"\nnot json\n" + hb(1, v=2)
    status, answer, _ = post(ingest, body)
    assert status == 400
    assert answer["error"] == "2 of 3 messages rejected"
    assert answer["rejected"][0].startswith("line 2: not_json")
    assert answer["rejected"][1] == "line 3: bad_version: 2"
    stats = ingest.fleet.stats()
    assert stats["rejected"]["not_json"] == 1 and stats["rejected"]["bad_version"] == 1
    assert stats["received"]["http"] == 3 and stats["accepted"]["http"] == 1
    assert post(ingest, b"\n\n")[0] == 400  # nothing in it at all


def test_oversize_is_413(ingest):
    """A body over http_ingest_max_body, or one message over max_payload, is refused with 413."""
    assert post(ingest, b"x" * 5000)[0] == 413
    big = hb(0, tags={"t": "x" * 1100})
    status, answer, _ = post(ingest, big)
    assert status == 413 and "max_payload" in answer["error"]
    assert ingest.fleet.stats()["rejected"]["oversize"] == 1


def test_other_paths_and_methods_are_refused(ingest):
    """GET is 405 (Allow: POST); any other path is 404; nothing reaches the fleet."""
    status, _, headers = post(ingest, None, method="GET")
    assert status == 405 and headers["Allow"] == "POST"
    assert post(ingest, hb(0), path="/write")[0] == 404
    assert ingest.fleet.stats()["received"]["http"] == 0


class StuckFleet:
    """A fleet whose receive() waits for `gate`: the ingest workers stay busy."""

    def __init__(self):
        self.config = CollectorSection()
        self.gate = threading.Event()
        self.entered = threading.Semaphore(0)

    def receive(self, *args, **kw):
        self.entered.release()
        self.gate.wait(10)

    def reject(self, *args):
        pass


def test_a_busy_worker_pool_answers_429_at_once():
    """One worker busy, the one queue place taken: the next request is answered 429 at once."""
    fleet = StuckFleet()
    config = CollectorSection(http_ingest_listen="127.0.0.1:0")
    rx = HttpIngest(fleet=fleet, config=config, limits=Limits(workers=1, queue=1, busy_status=429))  # type: ignore[arg-type]
    rx.start()
    results = []
    try:
        first = threading.Thread(target=lambda: results.append(post(rx, hb(0))[0]))
        first.start()
        assert fleet.entered.acquire(timeout=5)
        second = threading.Thread(target=lambda: results.append(post(rx, hb(1))[0]))
        second.start()
        wait_until(lambda: rx.stats()["requests"] == 2)
        started = time.monotonic()
        status, _, headers = post(rx, hb(2))
        assert status == 429 and time.monotonic() - started < 1
        assert headers["Retry-After"] == "1" and rx.stats()["busy"] == 1
        fleet.gate.set()
        first.join(5)
        second.join(5)
        assert results == [204, 204]
    finally:
        fleet.gate.set()
        rx.close()


def test_http_transport_shows_in_metrics(ingest):
    """/metrics counts what came over HTTP under transport="http"."""
    post(ingest, hb(0))
    text = render(ingest.fleet.devices(), ingest.fleet.stats())
    assert 'fleetbeat_received_messages_total{transport="http"} 1' in text
    assert 'transport="http"} 1' in text.split("fleetbeat_device_info", 1)[1]


def test_ingest_is_off_by_default_and_its_address_is_checked():
    """No key, no listener; a bad address names the key."""
    assert parse_collector_config({}, "c.toml").collector.http_ingest_listen == ""
    with pytest.raises(ConfigError, match=r"collector\.http_ingest_listen: expected an address"):
        parse_collector_config({"collector": {"http_ingest_listen": "9748"}}, "c.toml")


# --- a real agent and a real collector --------------------------------------------------


def agent_to_ingest_toml(port):
    """An agent posting wire v1 to the ingest (its UDP output goes to the discard port)."""
    http = (f'[[outputs.http]]\nurl = "http://127.0.0.1:{port}/ingest"\ntimeout = "1s"\n'
            'reconnect_min = "0.1s"\nreconnect_max = "0.2s"\n')  # fmt: skip
    return agent_toml(9, device="http-agent", extra=http)


def device(collector):
    devices = {d["id"]: d for d in collector.api("/api/devices")["devices"]}
    return devices.get("http-agent")


def test_agent_to_collector_over_http_ingest(start_collector, start_agent, tmp_path):
    """No gap in seqs; a collector restart's cost shows as agent drops; the bye arrives too."""
    port = free_port(socket.SOCK_STREAM)
    extra = f'http_ingest_listen = "127.0.0.1:{port}"'
    collector = start_collector(extra=extra)
    assert f"listening for wire v1 on HTTP 127.0.0.1:{port}" in collector.log()
    agent = start_agent(agent_to_ingest_toml(port))
    try:
        up = wait_until(lambda: (d := device(collector)) and d["received"] >= 20 and d, timeout=15)
    except AssertionError:
        raise AssertionError(agent.log()[-3000:] + collector.log()[-3000:]) from None
    assert up["state"] == "up" and up["transport"] == "http"
    assert up["lost"] == 0 and up["run_expected"] == up["run_received"], up
    assert up["readings_received"] > 0
    metrics = urllib.request.urlopen(collector.http_url() + "/metrics", timeout=5).read()  # noqa: S310
    assert b'fleetbeat_accepted_messages_total{transport="http"}' in metrics

    collector.proc.send_signal(signal.SIGTERM)
    assert collector.proc.wait(10) == 0
    wait_until(lambda: "(refused)" in agent.log())  # it posts on with nobody listening
    # a second of silence: 20 messages at 10/s each for heartbeats and readings, so at
    # least 5 drops whatever the speed of the machine (a fast one restarts in 0.3 s)
    time.sleep(1.0)
    collector = start_collector(extra=extra, state_dir=collector.state_dir, name="collector2")
    # The agent cannot post while nobody listens: it drops those messages itself (refused)
    # and says so in its next heartbeats; the collector resyncs its seq count after its
    # own restart (fleet.SeqTracker.resync), so they show as agent drops, not as loss.
    try:
        back = wait_until(lambda: (d := device(collector)) and d["agent_drops"] >= 5 and d,
                          timeout=15)  # fmt: skip
    except AssertionError:
        raise AssertionError(
            f"{device(collector)}\n{agent.log()[-3000:]}\n{collector.log()[-3000:]}"
        ) from None
    before = back["received"]
    after = wait_until(lambda: (d := device(collector)) and d["received"] >= before + 10 and d)
    # a loaded machine may make the new collector answer 429 while it starts: such a
    # message is lost to the collector, and counted by the agent that dropped it
    assert after["lost"] <= after["agent_drops"] - back["agent_drops"], (after, agent.log())
    agent.signal(signal.SIGTERM)  # the bye goes out over HTTP before the agent exits
    assert agent.wait(10) == 0
    assert wait_until(lambda: device(collector)["state"] == "offline")
