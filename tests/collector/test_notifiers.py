"""Notifiers against real peers: a local HTTP server (webhook, Apprise's json://), a real
subprocess (command), and the dispatcher's threads and retries around them."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from alert_helpers import Hook, alerts_config, device, event

from fleetbeat.collector.alerts import Alerts
from fleetbeat.collector.alerts_config import notify_tables
from fleetbeat.collector.grouping import Notification
from fleetbeat.collector.notifiers import build
from fleetbeat.collector.outbox import Dispatcher, Outbox
from fleetbeat.config.schema import Problems
from helpers import FakeClock, wait_until

T0 = 1_764_000_000.0


@pytest.fixture
def hooks():
    made: list[Hook] = []

    def make(*statuses: int, hang: bool = False) -> Hook:
        h = Hook(statuses or (200,), hang=hang)
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()


def notifiers(*tables: dict[str, Any]) -> list[Any]:
    """(config, notifier) pairs from [[collector.notify]] tables."""
    problems = Problems("test")
    configs = notify_tables()(list(tables), "collector.notify", problems)
    assert not problems, problems.items
    return [(c, build(c)) for c in configs]


def barn_notification(severity_rule: bool = False) -> Notification:
    """The engine's notification for three barn devices down (and one hot one)."""
    a = Alerts(alerts_config(group_wait="0s", rule=[{"name": "hot", "metric": "temp",
                                                     "above": 80, "severity": "info"}]))  # fmt: skip
    devs = [device(d, site="barn") for d in ("pi-barn-01", "pi-barn-02", "pi-barn-07")]
    devs.append(device("pi-barn-09", site="barn", metrics={"temp": 90.0 if severity_rule else 1.0}))
    a.evaluate(devs, T0)
    a.observe([event(T0, d["id"], "late", "down", "missed_heartbeats") for d in devs[:3]], T0)
    (n,) = a.tick(T0)
    return n


def pump_until(d: Dispatcher, clock: FakeClock, pred: Any, step: float = 50.0) -> None:
    """Pump the dispatcher, moving its clock on by `step` each poll, until `pred()` holds."""

    def poll() -> Any:
        d.pump()
        clock.now += step
        return pred()

    wait_until(poll, timeout=10)


@pytest.fixture
def dispatch(tmp_path):
    made: list[tuple[Dispatcher, Outbox]] = []

    def make(*tables: dict[str, Any], clock: FakeClock) -> Dispatcher:
        box = Outbox(str(tmp_path))
        d = Dispatcher(notifiers(*tables), box, clock=clock, rng=lambda: 0.5)
        made.append((d, box))
        return d

    yield make
    for d, box in made:
        d.close(0.1)
        box.close()


def test_webhook_retries_5xx_and_delivers_exactly_once(hooks, dispatch):
    """A webhook answering 500 three times then 200 gets the notification once, same id."""
    hook = hooks(500, 500, 500, 200)
    clock = FakeClock(T0)
    d = dispatch({"type": "webhook", "url": hook.url + "/hook"}, clock=clock)
    n = barn_notification()
    d.submit(n)
    pump_until(d, clock, lambda: d.stats()["pending"]["webhook"] == 0)
    for _ in range(5):  # nothing further goes out, however long we wait
        d.pump()
        clock.now += 3600
    bodies = hook.bodies()
    assert len(bodies) == 4 and {b["id"] for b in bodies} == {n.id}
    assert bodies[-1] == n.to_json()
    assert d.stats()["notifications"]["webhook"] == {"sent": 1, "failed": 3, "rejected": 0,
                                                     "gave_up": 0}  # fmt: skip
    assert hook.requests[0][1] == "/hook"


def test_webhook_sends_the_token_from_its_file(hooks, dispatch, tmp_path):
    """token_file's content goes as a Bearer token."""
    hook = hooks()
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    clock = FakeClock(T0)
    d = dispatch({"type": "webhook", "url": hook.url, "token_file": str(token)}, clock=clock)
    d.submit(barn_notification())
    pump_until(d, clock, lambda: hook.requests)
    assert hook.requests[0][2]["Authorization"] == "Bearer s3cret"


def test_a_4xx_is_not_retried(hooks, dispatch, caplog):
    """A 400 answer is rejected at once: counted, logged as an error, never sent again."""
    hook = hooks(400)
    clock = FakeClock(T0)
    d = dispatch({"type": "webhook", "url": hook.url}, clock=clock)
    d.submit(barn_notification())
    pump_until(d, clock, lambda: d.stats()["notifications"]["webhook"]["rejected"])
    for _ in range(3):
        d.pump()
        clock.now += 600
    assert len(hook.requests) == 1
    assert "answered 400; not retrying" in caplog.text


def test_a_notifier_that_never_answers_delays_no_other(hooks, dispatch):
    """A hung webhook does not hold up another notifier, nor the caller of submit/pump."""
    stuck, fine = hooks(hang=True), hooks()
    clock = FakeClock(T0)
    d = dispatch({"type": "webhook", "name": "stuck", "url": stuck.url, "timeout": "30s"},
                 {"type": "webhook", "name": "fine", "url": fine.url}, clock=clock)  # fmt: skip
    started = time.monotonic()
    d.submit(barn_notification())
    d.pump()
    assert time.monotonic() - started < 0.5
    wait_until(lambda: (d.pump(), fine.requests)[1], timeout=5)
    assert d.stats()["pending"] == {"stuck": 1, "fine": 0}


def test_filters_give_each_notifier_its_alerts(hooks, dispatch):
    """A notifier with severity = "critical" gets the down devices, not the info rule."""
    crit, every = hooks(), hooks()
    clock = FakeClock(T0)
    d = dispatch({"type": "webhook", "name": "crit", "url": crit.url, "severity": "critical"},
                 {"type": "webhook", "name": "all", "url": every.url}, clock=clock)  # fmt: skip
    d.submit(barn_notification(severity_rule=True))
    pump_until(d, clock, lambda: crit.requests and every.requests)
    (c,), (a,) = crit.bodies(), every.bodies()
    assert c["summary"] == "3 devices down at site=barn: pi-barn-01, pi-barn-02, pi-barn-07"
    assert {x["kind"] for x in a["alerts"]} == {"down", "rule"}
    assert a["summary"] == ("site=barn: 3 devices down: pi-barn-01, pi-barn-02, pi-barn-07; "
                            "hot on 1 device: pi-barn-09 (90)")  # fmt: skip


def test_command_gets_the_payload_on_stdin(tmp_path):
    """A real subprocess reads the JSON payload on stdin and the summary in its environment."""
    out = tmp_path / "got.json"
    script = ("import os, sys; open(sys.argv[1], 'w').write(sys.stdin.read()); "
              "open(sys.argv[1] + '.env', 'w').write(os.environ['FLEETBEAT_SUMMARY'])")  # fmt: skip
    ((_, cmd),) = notifiers({"type": "command", "argv": [sys.executable, "-c", script, str(out)]})
    n = barn_notification()
    assert cmd.send(n).status == "sent"
    assert json.loads(out.read_text()) == n.to_json()
    assert Path(str(out) + ".env").read_text() == n.summary


def test_command_failure_and_timeout_are_retryable(tmp_path):
    """Exit status 1 and a command outliving its timeout are failures worth a retry."""
    ((_, bad),) = notifiers({"type": "command", "argv": [sys.executable, "-c",
                                                         "import sys; sys.exit('no pager')"]})  # fmt: skip
    outcome = bad.send(barn_notification())
    assert (outcome.status, outcome.detail.endswith("exit status 1: no pager")) == ("failed", True)
    ((_, slow),) = notifiers({"type": "command", "timeout": "0.3s", "argv": [
        "sh", "-c", "sleep 30 & sleep 30"]})  # fmt: skip
    started = time.monotonic()
    outcome = slow.send(barn_notification())
    assert outcome.status == "failed" and "still running after 0.3 s" in outcome.detail
    assert time.monotonic() - started < 5  # its child sleeping too was killed with it


@pytest.mark.parametrize(("scheme", "path", "where"), [
    ("json", "/apprise", {"type": "failure"}),  # critical alerts
    ("ntfy", "/", {"topic": "apprise"}),  # a self-hosted ntfy: the topic in the body
])  # fmt: skip
def test_apprise_urls_reach_a_local_server(hooks, scheme, path, where):
    """Apprise's own json:// and ntfy:// code paths post the title and the summary."""
    hook = hooks()
    host = hook.url.removeprefix("http://")
    ((_, ap),) = notifiers({"type": "apprise", "urls": [f"{scheme}://{host}/apprise"]})
    n = barn_notification()
    assert ap.send(n).status == "sent"
    ((method, got_path, _, body),) = hook.requests
    got = json.loads(body)
    assert (method, got_path) == ("POST", path)
    assert got["message"] == n.summary and got["title"] == "[firing] site=barn"
    assert {k: got[k] for k in where} == where


def test_apprise_retries_only_the_urls_that_failed(hooks, tmp_path):
    """Of two URLs, the one that failed gets the retry; the one that succeeded is not told twice."""
    ok, flaky = hooks(), hooks(500, 200)
    urls = tmp_path / "urls"
    urls.write_text(f"# ops\njson://{ok.url[7:]}/a\njson://{flaky.url[7:]}/b\n")
    ((_, ap),) = notifiers({"type": "apprise", "urls_file": str(urls)})
    n = barn_notification()
    assert ap.send(n).status == "failed"
    assert ap.send(n).status == "sent"
    assert (len(ok.requests), len(flaky.requests)) == (1, 2)
