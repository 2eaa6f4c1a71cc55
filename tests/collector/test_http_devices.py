"""DELETE /api/devices/{id} on a real server and a real Fleet: the token, the origin,
hostile paths; and missing devices in the reads and /metrics."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_http_alerts import call
from web import Served, ServedFleet, get, get_json


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    s = Served(tmp_path)
    s.fleet.expect({"pi-barn-01": {"site": "barn"}, "pi-barn-02": {"site": "barn"}})
    for seq in range(2):
        s.hb("pi-1", seq)
        s.hb("pi-2", seq)
    yield s
    s.close()


def ids(s: ServedFleet) -> list[str]:
    status, body = get_json(s.url + "/api/devices")
    assert status == 200
    return [d["id"] for d in body["devices"]]


def test_a_device_is_forgotten_with_the_token(served: Served) -> None:
    """DELETE with the token: 200 {"forgotten": id}; the device is gone from the API, an
    event says so, and a second DELETE is 404."""
    status, _, body = call(served.url + "/api/devices/pi-1", "DELETE", headers=served.auth())
    assert (status, body) == (200, {"forgotten": "pi-1"})
    assert ids(served) == ["pi-2", "pi-barn-01", "pi-barn-02"]
    assert get(served.url + "/api/devices/pi-1")[0] == 404
    _, events = get_json(served.url + "/api/events")
    assert [(e["device"], e["to"], e["reason"]) for e in events["events"]] == [
        ("pi-2", "up", "first_seen"), ("pi-1", "forgotten", "forgotten")]  # fmt: skip
    status, _, body = call(served.url + "/api/devices/pi-1", "DELETE", headers=served.auth())
    assert (status, body) == (404, {"error": "unknown device", "id": "pi-1"})


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token-wrong-token"},
        {"Authorization": "Basic cGk6cGk="},
    ],
)
def test_a_delete_without_the_right_token_is_401_and_forgets_nothing(
    served: Served, headers: dict[str, str]
) -> None:
    """No token, a wrong one, another scheme: 401 with WWW-Authenticate; nothing goes."""
    status, got, body = call(served.url + "/api/devices/pi-1", "DELETE", headers=headers)
    assert status == 401 and got["WWW-Authenticate"].startswith("Bearer")
    assert "missing or wrong API token" in body["error"]
    assert "pi-1" in ids(served)


def test_a_delete_from_another_origin_is_403_even_with_the_token(served: Served) -> None:
    """A page on another site (which a browser here may show) cannot forget a device."""
    headers = {**served.auth(), "Origin": "http://evil.example"}
    status, _, _ = call(served.url + "/api/devices/pi-1", "DELETE", headers=headers)
    assert status == 403 and "pi-1" in ids(served)


def test_a_delete_with_a_form_body_is_415(served: Served) -> None:
    """A DELETE that carries a body must say application/json, as every write."""
    headers = {"Authorization": served.auth()["Authorization"],
               "Content-Type": "application/x-www-form-urlencoded"}  # fmt: skip
    status, _, _ = call(served.url + "/api/devices/pi-1", "DELETE", headers=headers, raw=b"a=b")
    assert status == 415 and "pi-1" in ids(served)


def test_a_missing_device_cannot_be_forgotten_and_says_why(served: Served) -> None:
    """A missing (expected, never heard) id is no device to forget: 404 saying so."""
    status, _, body = call(served.url + "/api/devices/pi-barn-01", "DELETE", headers=served.auth())
    assert status == 404 and body["error"].startswith("missing: never heard from")
    assert "pi-barn-01" in ids(served)


@pytest.mark.parametrize(
    ("path", "shown"),
    [
        ("pi-1%2Fhistory", "pi-1%2Fhistory"),  # an escaped slash: not an id
        ("pi-1%00", "pi-1%00"),
        ("%ff%fe", "%ff%fe"),  # not UTF-8
        ("%70%69%2d%31x", "pi-1x"),  # escaped letters are fine: an unknown id
        ("x" * 65, "x" * 65),  # past 64 characters
        ("%41" * 200, ("%41" * 200)[:80]),
    ],
)
def test_odd_ids_in_the_path_are_404_and_forget_nothing(
    served: Served, path: str, shown: str
) -> None:
    """Ids that cannot be device ids, escaped or not, are 404 (never a 500), echoed
    at most 80 characters long, and every device stays."""
    status, _, body = call(served.url + "/api/devices/" + path, "DELETE", headers=served.auth())
    assert (status, body["id"]) == (404, shown)
    assert ids(served) == ["pi-1", "pi-2", "pi-barn-01", "pi-barn-02"]


def test_an_escaped_id_is_forgotten(served: Served) -> None:
    """`pi%2D1` is pi-1: ids are matched unescaped."""
    status, _, body = call(served.url + "/api/devices/pi%2D1", "DELETE", headers=served.auth())
    assert (status, body) == (200, {"forgotten": "pi-1"})


def test_deeper_paths_and_the_collection_take_no_delete(served: Served) -> None:
    """DELETE /api/devices and /api/devices/{id}/history are not writes here: 405."""
    for path in ("/api/devices", "/api/devices/pi-1/history", "/api/devices/"):
        status, headers, _ = call(served.url + path, "DELETE", headers=served.auth())
        assert status == 405, path
        assert "DELETE" not in headers["Allow"]
    assert "pi-1" in ids(served)


def test_a_megabyte_long_path_is_refused_by_the_server(served: Served) -> None:
    """A 1 MB id never reaches the route: the header bound (431) answers, and the
    server goes on serving."""
    host, port = served.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"DELETE /api/devices/" + b"a" * (1 << 20) + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        while b"\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 431"), answer[:80]
    assert ids(served) == ["pi-1", "pi-2", "pi-barn-01", "pi-barn-02"]


def test_without_a_token_set_up_deletes_are_refused() -> None:
    """A server started without an API token refuses every write, this one too."""
    s = ServedFleet()
    try:
        s.hb("pi-1", 0)
        status, _, body = call(s.url + "/api/devices/pi-1", "DELETE")
        assert status == 401 and "no API token is set up" in body["error"]
        assert ids(s) == ["pi-1"]
    finally:
        s.close()


def test_missing_devices_are_read_filtered_and_counted(served: Served) -> None:
    """?state=missing lists them; counts and /metrics have them, one-hot like the rest."""
    _, body = get_json(served.url + "/api/devices?state=missing&tag=site:barn")
    assert [d["id"] for d in body["devices"]] == ["pi-barn-01", "pi-barn-02"]
    _, body = get_json(served.url + "/api/devices")
    assert body["counts"]["missing"] == 2
    _, one = get_json(served.url + "/api/devices/pi-barn-01")
    assert one["device"]["state"] == "missing" and one["device"]["tags"] == {"site": "barn"}
    _, stats = get_json(served.url + "/api/stats")
    assert stats["stats"]["devices"]["missing"] == 2
    assert stats["stats"]["devices_expected"] == 2
    text = get(served.url + "/metrics")[2].decode()
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    by_state = {s.labels["state"]: s.value for s in fams["fleetbeat_devices"].samples}
    assert by_state["missing"] == 2 and by_state["up"] == 2
    one_hot = {(s.labels["device"], s.labels["state"]): s.value
               for s in fams["fleetbeat_device_state"].samples}  # fmt: skip
    assert one_hot[("pi-barn-01", "missing")] == 1 and one_hot[("pi-1", "missing")] == 0
    seen = {
        s.labels["device"] for s in fams["fleetbeat_device_last_seen_timestamp_seconds"].samples
    }
    assert seen == {"pi-1", "pi-2"}  # never heard: no last-seen time to export
