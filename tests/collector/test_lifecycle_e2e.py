"""The lifecycle on a real `fleetbeat collector` subprocess: an expected_devices file, a
missing device in /api/devices, SIGHUP reloads, and `fleetbeat forget` as a real
command whose device stays gone after a restart."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any, Callable

from collector_helpers import CollectorProcess, Sender, stored_devices, stored_events

from helpers import free_port, run_cli, wait_until


def _devices(col: CollectorProcess) -> dict[str, dict[str, Any]]:
    return {d["id"]: d for d in col.api("/api/devices")["devices"]}


def _speak(sender: Sender, col: CollectorProcess, first: int = 0) -> None:
    """Two heartbeats: a confirmed (stored) device."""
    sender.send(first)
    sender.send(first + 1)
    wait_until(lambda: (_devices(col).get(sender.dev) or {}).get("received", 0) >= 2)


def test_expected_devices_are_missing_reloaded_and_a_forgotten_device_stays_gone(
    tmp_path: Path,
    start_collector: Callable[..., CollectorProcess],
    make_sender: Callable[..., Sender],
) -> None:
    """A real collector with an expected_devices file: never heard ids are missing with
    their tags, a heard one is up with the file's tags filling in; SIGHUP adds and
    removes ids, and a bad file then keeps the old list; `fleetbeat forget` removes a
    device, and after a restart it is still gone, with only the event that says so."""
    expected = tmp_path / "expected"
    expected.write_text("# the barn\npi-barn-01 site=barn room=loft\npi-barn-02 site=barn\n"
                        "pi-1 site=lab\n")  # fmt: skip
    port = free_port()
    extra = f'expected_devices = "{expected}"\nmissing_after = "1h"\n'
    col = start_collector(udp_port=port, extra=extra)
    assert "expected devices: 3 in" in col.log()
    seen = _devices(col)
    assert {k: d["state"] for k, d in seen.items()} == {
        "pi-barn-01": "missing", "pi-barn-02": "missing", "pi-1": "missing"}  # fmt: skip
    assert seen["pi-barn-01"]["tags"] == {"site": "barn", "room": "loft"}
    assert seen["pi-barn-01"]["last_seen"] is None
    _speak(make_sender(port, dev="pi-1"), col)  # the Sender's heartbeats say site=lab
    _speak(make_sender(port, dev="pi-gone"), col)
    pi1 = _devices(col)["pi-1"]
    assert (pi1["state"], pi1["tags"], pi1["listed"]) == ("up", {"site": "lab"}, True)
    counts = col.api("/api/stats")["stats"]["devices"]
    assert (counts["up"], counts["missing"]) == (2, 2)

    expected.write_text("pi-barn-01 site=barn\npi-barn-03 site=barn\npi-1\n")
    col.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "pi-barn-03" in _devices(col))
    missing = {k for k, d in _devices(col).items() if d["state"] == "missing"}
    assert missing == {"pi-barn-01", "pi-barn-03"}
    assert "expected devices: 3 in" in col.log() and "(+1, -1)" in col.log()
    expected.write_text("pi-barn-01 site=barn\npi-barn-04 site=\x00\n")
    col.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "line 2: a control character" in col.log())
    assert "keeping the expected devices read before" in col.log()
    assert set(_devices(col)) == {"pi-barn-01", "pi-barn-03", "pi-1", "pi-gone"}

    wait_until(lambda: "pi-gone" in stored_devices(col.state_dir))
    done = run_cli("forget", "pi-gone", "--url", col.http_url() or "", "-c",
                   str(col.config_path))  # fmt: skip
    assert (done.returncode, done.stdout) == (0, "forgot pi-gone\n"), done.stderr
    assert "pi-gone" not in _devices(col)
    wait_until(lambda: "pi-gone" not in stored_devices(col.state_dir))
    wait_until(lambda: any(e["device"] == "pi-gone" for e in stored_events(col.state_dir)))
    assert col.terminate() == 0
    col.stop()
    expected.write_text("pi-barn-01 site=barn\npi-1\n")  # a bad file would stop the start

    again = start_collector(udp_port=port, extra=extra, state_dir=col.state_dir, name="again")
    after = _devices(again)
    assert "pi-gone" not in after and after["pi-1"]["state"] in ("up", "late", "down")
    assert after["pi-barn-01"]["state"] == "missing"
    gone = [e for e in stored_events(again.state_dir) if e["device"] == "pi-gone"]
    assert [(e["to"], e["reason"]) for e in gone] == [("forgotten", "forgotten")]
    assert gone[0]["from"] in ("up", "late", "down")  # its heartbeats come every 0.1 s
    assert [e["to"] for e in again.api("/api/events")["events"] if e["device"] == "pi-gone"] == [
        "forgotten"
    ]


def test_forget_reports_refusals_and_an_unreachable_collector(
    tmp_path: Path,
    start_collector: Callable[..., CollectorProcess],
    make_sender: Callable[..., Sender],
) -> None:
    """`fleetbeat forget` of an unknown id and a known one: the known one goes, the
    unknown is reported with the collector's reason, exit 1; a wrong token forgets
    nothing; no collector there: exit 3."""
    col = start_collector()
    _speak(make_sender(col.udp_port, dev="pi-1"), col)
    url = col.http_url() or ""
    bad = tmp_path / "bad-token"
    bad.write_text("not-the-token-at-all\n")
    refused = run_cli("forget", "pi-1", "--url", url, "--token-file", str(bad))
    assert refused.returncode == 1 and "HTTP 401" in refused.stderr
    assert "pi-1" in _devices(col)
    token = str(col.state_dir / "api-token")
    done = run_cli("forget", "pi-nobody", "pi-1", "--url", url, "--token-file", token)
    assert done.returncode == 1, done.stderr
    assert "pi-nobody" in done.stderr and "HTTP 404: unknown device" in done.stderr
    assert done.stdout == "forgot pi-1\n" and _devices(col) == {}
    away = run_cli("forget", "pi-1", "--url", f"127.0.0.1:{free_port()}", "--token-file", token)
    assert away.returncode == 3 and "cannot reach the collector" in away.stderr


def test_forget_explains_itself() -> None:
    """`fleetbeat forget --help` says what goes, what comes back, and the exit codes."""
    done = run_cli("forget", "--help")
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    for words in ("its row, its events and its history", "simply a new device",
                  "expected_devices", "forget_after", "--token-file", "Exit status"):  # fmt: skip
        assert words in text, words
