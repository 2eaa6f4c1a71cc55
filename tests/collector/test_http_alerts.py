"""The alert routes and the write rules: token, origin and content type, on a real server."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import pytest
from prometheus_client.parser import text_string_to_metric_families
from web import Served, ServedFleet, get


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    s = Served(tmp_path)
    yield s
    s.close()


def call(url: str, method: str, body: Any = None, headers: Optional[dict[str, str]] = None,
         raw: Optional[bytes] = None) -> tuple[int, dict[str, str], Any]:  # fmt: skip
    """One request; (status, headers, JSON body) for errors too."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})  # noqa: S310
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=10) as resp:
            return resp.status, dict(resp.headers.items()), json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers.items()), json.loads(err.read())


def silences(s: Served) -> list[dict[str, Any]]:
    status, _, body = call(s.url + "/api/silences", "GET")
    assert status == 200
    return list(body["silences"])


BARN = {"tag": "site:barn", "duration": "2h", "comment": "rewiring the barn"}


def test_a_silence_is_made_listed_and_deleted_with_the_token(served: Served) -> None:
    """POST with the token answers 201 and an id; GET lists it; DELETE removes it, then 404."""
    status, headers, made = call(served.url + "/api/silences", "POST", BARN, served.auth())
    assert status == 201, made
    assert headers["Location"] == f"/api/silences/{made['id']}"
    assert made["match"] == {"tag": "site:barn"} and made["comment"] == "rewiring the barn"
    assert made["until"] == pytest.approx(time.time() + 7200, abs=5)
    assert [x["id"] for x in silences(served)] == [made["id"]]
    target = f"{served.url}/api/silences/{made['id']}"
    assert call(target, "DELETE", headers=served.auth())[0] == 200
    assert silences(served) == []
    assert call(target, "DELETE", headers=served.auth())[0] == 404


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"Content-Type": "application/json"}, 401),
        ({"Content-Type": "application/json", "Authorization": "Bearer wrong-token-000000"}, 401),
        ({"Content-Type": "application/json", "Authorization": "Basic Zm9vOmJhcg=="}, 401),
    ],
    ids=["no-token", "wrong-token", "other-scheme"],
)
def test_writes_without_the_right_token_are_refused_and_change_nothing(
    served: Served, headers: dict[str, str], status: int
) -> None:
    """A POST without the token, with a wrong one or another scheme is 401 with a JSON error."""
    got, answer_headers, body = call(served.url + "/api/silences", "POST", BARN, headers)
    assert got == status and "token" in body["error"]
    assert answer_headers["WWW-Authenticate"].startswith("Bearer")
    assert silences(served) == []


def test_a_cross_site_form_post_is_refused_and_changes_nothing(served: Served) -> None:
    """A browser form from another site (form type, foreign Origin, no token) is refused."""
    form = b"tag=site%3Abarn&duration=2h"
    headers = {"Content-Type": "application/x-www-form-urlencoded",
               "Origin": "http://evil.example"}  # fmt: skip
    status, _, body = call(served.url + "/api/silences", "POST", raw=form, headers=headers)
    assert status == 403 and "cross-origin" in body["error"]
    assert silences(served) == []


def test_the_token_does_not_make_a_foreign_origin_or_a_form_body_acceptable(
    served: Served,
) -> None:
    """With the token: a foreign Origin is 403, a form body 415; the own origin is accepted."""
    url = served.url + "/api/silences"
    evil = {**served.auth(), "Origin": "http://evil.example"}
    assert call(url, "POST", BARN, evil)[0] == 403
    form = {**served.auth(), "Content-Type": "application/x-www-form-urlencoded"}
    assert call(url, "POST", raw=b"tag=site%3Abarn&duration=2h", headers=form)[0] == 415
    plain = {**served.auth(), "Content-Type": "text/plain"}
    assert call(url, "POST", raw=json.dumps(BARN).encode(), headers=plain)[0] == 415
    assert silences(served) == []
    own = {**served.auth(), "Origin": served.url}
    assert call(url, "POST", BARN, own)[0] == 201


def test_a_delete_without_the_token_is_refused(served: Served) -> None:
    """DELETE of a silence without the token is 401 and the silence stays."""
    _, _, made = call(served.url + "/api/silences", "POST", BARN, served.auth())
    assert call(f"{served.url}/api/silences/{made['id']}", "DELETE")[0] == 401
    assert [x["id"] for x in silences(served)] == [made["id"]]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"duration": "2h"}, "name a device or a tag"),
        ({"device": "pi-1"}, "give duration or until"),
        ({"device": "pi-1", "duration": "2h", "colour": "red"}, "unknown key"),
        ({"device": "pi-1", "until": 5}, "in the future"),
    ],
)
def test_a_bad_silence_is_a_400_naming_the_problem(
    served: Served, body: dict[str, Any], words: str
) -> None:
    """A silence request that cannot be a silence is 400 with what is wrong with it."""
    status, _, answer = call(served.url + "/api/silences", "POST", body, served.auth())
    assert status == 400 and words in answer["error"], answer
    assert silences(served) == []


def test_a_body_that_is_not_json_is_a_400(served: Served) -> None:
    """A POST whose body does not parse as JSON is 400, not 500."""
    status, _, answer = call(served.url + "/api/silences", "POST", raw=b"{nope",
                             headers=served.auth())  # fmt: skip
    assert status == 400 and "not JSON" in answer["error"]


def test_other_methods_are_405_with_what_is_allowed(served: Served) -> None:
    """PUT on the silences, POST on the devices: 405 with an Allow header."""
    status, headers, _ = call(served.url + "/api/silences", "PUT", BARN, served.auth())
    assert status == 405 and headers["Allow"] == "GET, HEAD, POST"
    assert call(served.url + "/api/devices", "POST", {}, served.auth())[0] == 405


def test_alerts_are_listed_open_with_the_silenced_ones_marked(served: Served) -> None:
    """GET /api/alerts needs no token; a silenced device's alert carries the silence's comment."""
    served.hb("pi-barn-01", 0, tags={"site": "barn"})
    served.hb("pi-barn-01", 1, tags={"site": "barn"})
    served.hb("pi-shed-01", 0, tags={"site": "shed"})
    served.hb("pi-shed-01", 1, tags={"site": "shed"})
    served.alerting.turn()  # tags read
    call(served.url + "/api/silences", "POST", BARN, served.auth())
    served.advance(4.0)  # both down
    served.alerting.observe(served.fleet.take_changes()[1])
    status, _, body = call(served.url + "/api/alerts", "GET")
    assert status == 200
    by_device = {a["device"]: a for a in body["alerts"]}
    assert set(by_device) == {"pi-barn-01", "pi-shed-01"}
    assert by_device["pi-barn-01"]["suppressed"]["by"] == "silence"
    assert by_device["pi-barn-01"]["suppressed"]["comment"] == "rewiring the barn"
    assert by_device["pi-shed-01"]["suppressed"] is None
    assert body["notifications"] == {} and body["self_check"] is None


def test_without_alerting_the_alert_routes_are_not_there() -> None:
    """A server started without alerting answers 404 to /api/alerts and 405 to writes."""
    s = ServedFleet()
    try:
        assert get(s.url + "/api/alerts")[0] == 404
        assert call(s.url + "/api/silences", "POST", BARN)[0] == 405
    finally:
        s.close()


def test_metrics_count_notifications_by_notifier_and_outcome(tmp_path: Path) -> None:
    """/metrics has the notifier families, parsed by prometheus_client, one sample per outcome."""
    s = Served(tmp_path, notify=[{"type": "webhook", "url": "http://127.0.0.1:9/hook"}])
    try:
        _, _, body = get(s.url + "/metrics")
        families = {f.name: f for f in text_string_to_metric_families(body.decode())}
        sent = families["fleetbeat_notifications"].samples
        assert {(x.labels["notifier"], x.labels["outcome"]) for x in sent} == {
            ("webhook", o) for o in ("sent", "failed", "rejected", "gave_up")
        }
        assert [x.value for x in families["fleetbeat_notifications_pending"].samples] == [0]
        assert [x.value for x in families["fleetbeat_notifier_failing"].samples] == [0]
    finally:
        s.close()
