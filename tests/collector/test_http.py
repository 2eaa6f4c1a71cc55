"""The collector's HTTP API, served by the real server from a real Fleet fed wire v1 bytes."""

from __future__ import annotations

import gzip
import json
import socket
from collections.abc import Iterator

import pytest
from web import RUN_B, ServedFleet, get, get_json

from fleetbeat.collector import http
from fleetbeat.errors import FleetbeatError

CONTRACT_FIELDS = {
    "id", "state", "last_seen", "addr", "run", "boot_time", "interval", "tags", "metrics",
    "clock_skew", "restarts", "reboots", "agent_drops", "received", "expected", "lost",
    "duplicates", "reordered", "loss_pct", "recent_loss_pct", "down_after_effective", "transport",
}  # fmt: skip


@pytest.fixture
def served() -> Iterator[ServedFleet]:
    """Three devices: kitchen-1 up, garage-1 down, attic-1 offline."""
    s = ServedFleet(down_after=3)
    s.hb("kitchen-1", 0, interval=10, tags={"site": "home", "room": "kitchen"})
    for seq in (0, 1):  # two heartbeats: a device heard once leaves no events
        s.hb("garage-1", seq, tags={"site": "home", "room": "garage"})
    s.hb("attic-1", 0, tags={"site": "cabin"})
    s.hb("attic-1", 1, kind="bye")
    s.advance(2.0)
    s.hb("kitchen-1", 1, interval=10, tags={"site": "home", "room": "kitchen"})
    s.advance(2.0)  # garage-1: 4 intervals silent -> down
    yield s
    s.close()


def test_devices_lists_every_device_with_the_contract_fields(served: ServedFleet) -> None:
    """/api/devices returns every device, sorted by id, with counts by state."""
    status, body = get_json(served.url + "/api/devices")
    assert status == 200
    assert [d["id"] for d in body["devices"]] == ["attic-1", "garage-1", "kitchen-1"]
    assert {d["id"]: d["state"] for d in body["devices"]} == {
        "attic-1": "offline", "garage-1": "down", "kitchen-1": "up",
    }  # fmt: skip
    assert body["count"] == 3
    assert body["counts"] == {"up": 1, "late": 0, "down": 1, "offline": 1, "missing": 0}
    for dev in body["devices"]:
        assert set(dev) >= CONTRACT_FIELDS, CONTRACT_FIELDS - set(dev)
    assert body["time"] > 0


def test_state_filter_selects_one_or_several_states(served: ServedFleet) -> None:
    """?state=down keeps down devices; ?state=up,offline (or repeated) keeps either."""
    _, body = get_json(served.url + "/api/devices?state=down")
    assert [d["id"] for d in body["devices"]] == ["garage-1"]
    assert body["counts"]["down"] == 1 and body["count"] == 1
    _, body = get_json(served.url + "/api/devices?state=up,offline")
    assert [d["id"] for d in body["devices"]] == ["attic-1", "kitchen-1"]
    _, body = get_json(served.url + "/api/devices?state=up&state=down")
    assert [d["id"] for d in body["devices"]] == ["garage-1", "kitchen-1"]


def test_tag_filter_requires_every_tag(served: ServedFleet) -> None:
    """?tag=k:v keeps devices with that tag; several must all match; ?tag=k needs the key only."""
    _, body = get_json(served.url + "/api/devices?tag=site:home")
    assert [d["id"] for d in body["devices"]] == ["garage-1", "kitchen-1"]
    _, body = get_json(served.url + "/api/devices?tag=site:home&tag=room:garage")
    assert [d["id"] for d in body["devices"]] == ["garage-1"]
    _, body = get_json(served.url + "/api/devices?tag=room")
    assert [d["id"] for d in body["devices"]] == ["garage-1", "kitchen-1"]
    _, body = get_json(served.url + "/api/devices?tag=site:home&state=up")
    assert [d["id"] for d in body["devices"]] == ["kitchen-1"]
    _, body = get_json(served.url + "/api/devices?tag=site:nowhere")
    assert body["devices"] == [] and body["count"] == 0


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ("/api/devices?state=sleeping", "unknown state 'sleeping'"),
        ("/api/devices?tag=:x", "expected KEY:VALUE"),
        ("/api/events?since=yesterday", "since: expected a number"),
        ("/api/events?limit=0", "limit: expected 1 to"),
        ("/api/events?since=nan", "finite"),
    ],
)
def test_bad_queries_get_400_with_a_reason(served: ServedFleet, query: str, words: str) -> None:
    """An invalid filter is a 400 whose JSON error says what is wrong."""
    status, body = get_json(served.url + query)
    assert status == 400
    assert words in body["error"]


def test_one_device_and_404_for_an_unknown_id(served: ServedFleet) -> None:
    """/api/devices/{id} returns that device; an unknown id is a 404 JSON error."""
    status, body = get_json(served.url + "/api/devices/kitchen-1")
    assert status == 200
    dev = body["device"]
    assert dev["id"] == "kitchen-1" and dev["state"] == "up"
    assert dev["tags"] == {"site": "home", "room": "kitchen"}
    assert dev["received"] == 2 and dev["lost"] == 0
    assert dev["addr"] == "127.0.0.1:40000" and dev["transport"] == "udp"
    status, body = get_json(served.url + "/api/devices/no-such-device")
    assert status == 404
    assert body == {"error": "unknown device", "id": "no-such-device"}


def test_events_since_returns_only_newer_transitions(served: ServedFleet) -> None:
    """/api/events lists transitions oldest first; ?since=T keeps those after T."""
    _, body = get_json(served.url + "/api/events")
    events = body["events"]
    assert [(e["device"], e["from"], e["to"]) for e in events if e["device"] == "garage-1"] == [
        ("garage-1", None, "up"), ("garage-1", "up", "late"), ("garage-1", "late", "down"),
    ]  # fmt: skip
    times = [e["time"] for e in events]
    assert times == sorted(times)
    cut = next(e["time"] for e in events if e["to"] == "late")
    _, body = get_json(f"{served.url}/api/events?since={cut!r}")
    assert body["events"] and all(e["time"] > cut for e in body["events"])
    assert [e["to"] for e in body["events"]] == ["down"]
    _, body = get_json(served.url + "/api/events?limit=1")
    assert body["events"] == events[-1:]


def test_restart_shows_in_device_and_events(served: ServedFleet) -> None:
    """A new run id from a known device is a restart event and counts in `restarts`."""
    served.hb("kitchen-1", 0, run=RUN_B, interval=10)
    _, body = get_json(served.url + "/api/devices/kitchen-1")
    assert body["device"]["restarts"] == 1 and body["device"]["run"] == RUN_B
    _, body = get_json(served.url + "/api/events")
    assert body["events"][-1]["reason"] == "restart"


def test_healthz_stats_unknown_paths_and_head(served: ServedFleet) -> None:
    """/healthz is 200 ok; /api/stats has the counters; other paths 404; HEAD sends no body."""
    status, body = get_json(served.url + "/healthz")
    assert status == 200 and body["status"] == "ok"
    status, body = get_json(served.url + "/api/stats")
    assert status == 200 and body["stats"]["devices_known"] == 3
    status, body = get_json(served.url + "/nothing/here")
    assert status == 404 and body["error"] == "not found"
    host, port = served.server.host, served.server.port
    with socket.create_connection((host, port), timeout=5) as conn:
        conn.sendall(b"HEAD /api/devices HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        raw = b""
        while chunk := conn.recv(65536):
            raw += chunk
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"Content-Length: " in head and rest == b""


def test_keep_alive_serves_several_requests_on_one_connection(served: ServedFleet) -> None:
    """HTTP/1.1 keep-alive: a polling dashboard reuses its connection."""
    import http.client

    conn = http.client.HTTPConnection(served.server.host, served.server.port, timeout=5)
    for _ in range(3):
        conn.request("GET", "/api/devices?state=up")
        resp = conn.getresponse()
        assert resp.status == 200
        assert [d["id"] for d in json.loads(resp.read())["devices"]] == ["kitchen-1"]
    conn.close()


def test_close_frees_the_port() -> None:
    """After close() nothing answers, and a new server can take the port at once."""
    s = ServedFleet()
    host, port = s.server.host, s.server.port
    assert get(s.url + "/healthz")[0] == 200
    s.close()
    with pytest.raises(OSError):
        socket.create_connection((host, port), timeout=1).close()
    again = ServedFleet(listen=f"{host}:{port}")
    try:
        assert get(again.url + "/healthz")[0] == 200
    finally:
        again.close()


def test_port_in_use_is_a_clear_error() -> None:
    """Binding a busy port raises FleetbeatError naming the address."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(FleetbeatError, match=f"cannot serve HTTP on 127.0.0.1:{port}"):
            ServedFleet(listen=f"127.0.0.1:{port}")


def test_serves_on_ipv6_loopback() -> None:
    """http_listen = "[::1]:PORT" serves over IPv6."""
    try:
        socket.socket(socket.AF_INET6).close()
        s = ServedFleet(listen="[::1]:0")
    except (OSError, FleetbeatError) as err:
        pytest.skip(f"no IPv6 loopback here: {err}")
    try:
        assert s.url.startswith("http://[::1]:")
        s.hb("v6-dev", 0)
        status, body = get_json(s.url + "/api/devices/v6-dev")
        assert status == 200 and body["device"]["id"] == "v6-dev"
    finally:
        s.close()


def test_json_never_carries_nan() -> None:
    """Non-finite floats become null, so browsers and jq can read every answer."""
    assert json.loads(http.json_bytes({"a": float("nan"), "b": [float("inf"), 1.5]})) == {
        "a": None, "b": [None, 1.5],
    }  # fmt: skip


def test_parse_listen_accepts_v4_and_v6() -> None:
    """http_listen is HOST:PORT or [V6]:PORT; anything else is a FleetbeatError."""
    assert http.parse_listen("127.0.0.1:9747") == ("127.0.0.1", 9747)
    assert http.parse_listen("[::1]:9747") == ("::1", 9747)
    with pytest.raises(FleetbeatError, match="HOST:PORT"):
        http.parse_listen("localhost")


def test_big_answers_are_gzipped_when_accepted(served: ServedFleet) -> None:
    """A client that accepts gzip gets big answers compressed; small ones stay plain."""
    for i in range(20):
        served.hb(f"extra-{i:02d}", 0, tags={"site": "home"})
    status, headers, body = get(served.url + "/api/devices", {"Accept-Encoding": "gzip"})
    assert status == 200 and headers["Content-Encoding"] == "gzip"
    assert len(json.loads(gzip.decompress(body))["devices"]) == 23
    status, headers, body = get(served.url + "/healthz", {"Accept-Encoding": "gzip"})
    assert "Content-Encoding" not in headers and json.loads(body)["status"] == "ok"
    status, headers, body = get(served.url + "/api/devices")
    assert "Content-Encoding" not in headers and json.loads(body)["count"] == 23


def test_loopback_server_refuses_foreign_host_names(served: ServedFleet) -> None:
    """Bound to loopback, a request naming another host (DNS rebinding) is refused with 403."""
    for host in ("evil.example:9747", "192.0.2.1:9747"):
        status, _, body = get(served.url + "/api/devices", {"Host": host})
        assert status == 403 and "loopback" in json.loads(body)["error"]
    for host in ("localhost:9747", "127.0.0.1", "127.1.2.3:80", "[::1]:9747", "LOCALHOST"):
        assert get(served.url + "/api/devices", {"Host": host})[0] == 200, host
