"""`/metrics`: the Prometheus exposition, parsed by prometheus-client's own parser."""

from __future__ import annotations

import gzip
import math
import time
from collections.abc import Iterator
from typing import Any, Callable

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from web import ServedFleet, get

from helpers import agent_toml, wait_until


@pytest.fixture
def served() -> Iterator[ServedFleet]:
    s = ServedFleet(down_after=3)
    yield s
    s.close()


def scrape(s: ServedFleet) -> dict[str, list[Sample]]:
    """GET /metrics and parse it: family name -> samples."""
    status, headers, body = get(s.url + "/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    families = text_string_to_metric_families(body.decode())
    return {f.name: list(f.samples) for f in families}


def value(samples: list[Sample], name: str, **labels: str) -> float:
    found = [s.value for s in samples if s.name == name and s.labels == labels]
    assert len(found) == 1, (name, labels, samples)
    return found[0]


def test_loss_duplicates_and_reordering_per_device(served: ServedFleet) -> None:
    """Per-device counters carry the exact loss, duplicate and reorder figures of the stream."""
    for seq in (0, 1, 2, 4, 4, 6, 5, 9):  # 3, 7, 8 lost; 4 duplicated; 5 late
        served.hb("lossy", seq)
    served.hb("clean", 0)
    served.hb("clean", 1)
    m = scrape(served)

    def counter(family: str, dev: str) -> float:
        name = f"fleetbeat_device_heartbeats_{family}"
        return value(m[name], name + "_total", device=dev)

    assert counter("expected", "lossy") == 10
    assert counter("received", "lossy") == 7
    assert counter("lost", "lossy") == 3
    assert counter("duplicated", "lossy") == 1
    assert counter("reordered", "lossy") == 1
    assert counter("lost", "clean") == 0
    ratio = "fleetbeat_device_heartbeat_loss_ratio"
    assert value(m[ratio], ratio, device="lossy") == pytest.approx(0.3)


def test_last_seen_timestamp_and_interval_per_device(served: ServedFleet) -> None:
    """fleetbeat_device_last_seen_timestamp_seconds is the Unix time of the last message."""
    served.hb("pi-1", 0, interval=2.5)
    seen = served.clock.now
    served.advance(1.0)
    m = scrape(served)
    name = "fleetbeat_device_last_seen_timestamp_seconds"
    assert value(m[name], name, device="pi-1") == pytest.approx(seen)
    name = "fleetbeat_device_heartbeat_interval_seconds"
    assert value(m[name], name, device="pi-1") == 2.5


def test_device_state_is_one_hot_and_devices_are_counted_by_state(served: ServedFleet) -> None:
    """Each device has a 1 for its state and 0 for the others; fleetbeat_devices counts states."""
    served.hb("quiet", 0)
    served.hb("talky", 0, interval=100)
    served.advance(5.0)  # quiet: 5 intervals silent -> down
    m = scrape(served)
    states = {(s.labels["device"], s.labels["state"]): s.value for s in m["fleetbeat_device_state"]}
    assert states == {
        ("quiet", "up"): 0, ("quiet", "late"): 0, ("quiet", "down"): 1, ("quiet", "offline"): 0,
        ("talky", "up"): 1, ("talky", "late"): 0, ("talky", "down"): 0, ("talky", "offline"): 0,
        ("quiet", "missing"): 0, ("talky", "missing"): 0,
    }  # fmt: skip
    counts = {s.labels["state"]: s.value for s in m["fleetbeat_devices"]}
    assert counts == {"up": 1, "late": 0, "down": 1, "offline": 0, "missing": 0}


def test_rejected_payloads_are_counted_by_reason(served: ServedFleet) -> None:
    """Garbage and wrong versions show up in fleetbeat_rejected_messages_total{reason}."""
    served.send(b"\x00\xffnot json")
    served.send(b"\x00\xffnot json either")
    served.send(b'{"v":2,"k":"hb","dev":"x","run":"0123456789abcdef","seq":0,"ts":1}')
    served.hb("good", 0)
    m = scrape(served)
    rejected = {s.labels["reason"]: s.value for s in m["fleetbeat_rejected_messages"]}
    assert sum(rejected.values()) == 3
    assert sorted(rejected.values()) == [1, 2]
    received = {s.labels["transport"]: s.value for s in m["fleetbeat_received_messages"]}
    accepted = {s.labels["transport"]: s.value for s in m["fleetbeat_accepted_messages"]}
    assert received["udp"] == 4 and accepted["udp"] == 1


def test_names_follow_prometheus_conventions(served: ServedFleet) -> None:
    """fleetbeat_ prefix, counters end in _total, timestamps in _seconds, help on every family."""
    served.hb("pi-1", 0)
    served.hb("pi-1", 0, run="fedcba9876543210")
    _, _, body = get(served.url + "/metrics")
    families = list(text_string_to_metric_families(body.decode()))
    ours = [f for f in families if not f.name.startswith("process_")]
    assert len(ours) > 20
    for fam in ours:
        assert fam.name.startswith("fleetbeat_"), fam.name
        assert fam.documentation, fam.name
        for sample in fam.samples:
            if fam.type == "counter":
                assert sample.name == fam.name + "_total", sample.name
            if any(w in sample.name for w in ("timestamp", "boot_time", "skew", "beat_interval")):
                assert sample.name.endswith("_seconds"), sample.name
    by_name = {f.name: f for f in families}
    assert by_name["fleetbeat_device_restarts"].type == "counter"
    assert by_name["fleetbeat_device_last_seen_timestamp_seconds"].type == "gauge"
    info = by_name["fleetbeat_device_info"]  # an info metric: a gauge of 1 in text format 0.0.4
    assert info.samples[0].value == 1
    assert info.samples[0].labels == {"device": "pi-1", "version": "0.1.0", "transport": "udp"}
    assert "process_resident_memory_bytes" in body.decode()


def test_metrics_are_read_at_scrape_time(served: ServedFleet) -> None:
    """A device that appears between two scrapes is in the second, with no other step."""
    served.hb("first", 0)
    assert {s.labels["device"] for s in scrape(served)["fleetbeat_device_restarts"]} == {"first"}
    served.hb("second", 0)
    assert {s.labels["device"] for s in scrape(served)["fleetbeat_device_restarts"]} == {
        "first", "second",
    }  # fmt: skip


def test_text_format_whatever_is_asked_and_gzip_when_accepted(served: ServedFleet) -> None:
    """An OpenMetrics-first Accept still gets text 0.0.4 (allowed); Accept-Encoding gzip, gzip."""
    served.hb("pi-1", 0)
    status, headers, body = get(
        served.url + "/metrics",
        {
            "Accept": "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;q=0.4",
            "Accept-Encoding": "gzip",
        },
    )
    assert status == 200
    assert headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert headers["Content-Encoding"] == "gzip"
    text = gzip.decompress(body).decode()
    assert 'fleetbeat_device_last_seen_timestamp_seconds{device="pi-1"}' in text
    assert [f.name for f in text_string_to_metric_families(text)][:1] == ["fleetbeat_devices"]


def test_label_values_and_numbers_are_escaped_and_formatted() -> None:
    """Quotes, backslashes and newlines in label values, and non-finite values, parse back."""
    from fleetbeat.collector import metrics

    dev = {"id": "pi-1", "state": "up", "version": 'v"1\\2\nx', "transport": "udp",
           "clock_skew": float("nan"), "interval": float("inf"), "received": 5}  # fmt: skip
    text = metrics.render([dev], {"rejected": {'bad "json"': 2}})
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    assert fams["fleetbeat_device_info"].samples[0].labels["version"] == 'v"1\\2\nx'
    assert fams["fleetbeat_rejected_messages"].samples[0].labels["reason"] == 'bad "json"'
    skew = fams["fleetbeat_device_clock_skew_seconds"].samples[0].value
    assert math.isnan(skew)
    assert fams["fleetbeat_device_heartbeat_interval_seconds"].samples[0].value == float("inf")
    assert fams["fleetbeat_device_heartbeats_received"].samples[0].value == 5
    assert "fleetbeat_device_boot_time_seconds{" not in text  # absent field: no sample


def test_collector_process_serves_metrics_for_a_live_agent(
    start_collector: Callable[..., Any], start_agent: Callable[..., Any]
) -> None:
    """A real collector subprocess fed by a real agent exposes it in /metrics, parseable."""
    collector = start_collector()
    url = wait_until(collector.http_url)
    start_agent(agent_toml(collector.udp_port, interval="0.05s", device="pi-scraped"))

    def scraped() -> dict[str, list[Sample]]:
        _, _, body = get(url + "/metrics")
        fams = {f.name: list(f.samples) for f in text_string_to_metric_families(body.decode())}
        received = fams.get("fleetbeat_device_heartbeats_received", [])
        return fams if any(s.value >= 5 for s in received) else {}

    m = wait_until(scraped, timeout=10)
    seen = value(
        m["fleetbeat_device_last_seen_timestamp_seconds"],
        "fleetbeat_device_last_seen_timestamp_seconds",
        device="pi-scraped",
    )
    assert abs(seen - time.time()) < 5
    assert (
        value(
            m["fleetbeat_device_state"], "fleetbeat_device_state", device="pi-scraped", state="up"
        )
        == 1
    )
    assert value(m["fleetbeat_devices"], "fleetbeat_devices", state="up") == 1
    assert m["process_resident_memory_bytes"][0].value > 1e6
