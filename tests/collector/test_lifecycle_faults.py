"""The lifecycle where the store fails: a forget is either stored or refused, never
answered 200 and then silently undone by a restart."""

from __future__ import annotations

import logging
from typing import Any, Callable

import pytest
from collector_helpers import CollectorProcess, Sender, stored_devices
from test_alerting import collector, heartbeats  # noqa: F401
from test_store_faults import SmallDisk, _send_new_devices, small_disk  # noqa: F401

from fleetbeat.collector.service import Collector
from fleetbeat.collector.store import StoreError
from helpers import run_cli, wait_until


@pytest.mark.slow
def test_a_forget_on_a_full_disk_is_refused_and_the_device_stays(
    small_disk: SmallDisk,  # noqa: F811
    start_collector: Callable[..., CollectorProcess],
    make_sender: Callable[..., Sender],
) -> None:
    """While the store cannot write, `fleetbeat forget` is refused (503, exit 1, the store
    problem named) and nothing is forgotten; once the disk is freed the same forget
    works, and after a restart the device is still gone."""
    col = start_collector(state_dir=small_disk.path)
    sender = make_sender(col.udp_port)
    _send_new_devices(sender, "pi", 3)
    wait_until(lambda: len(stored_devices(small_disk.path)) == 3)
    small_disk.fill()
    _send_new_devices(sender, "fill", 30)
    wait_until(lambda: "store: cannot write" in col.log(), timeout=10)
    args = ("forget", "pi-0", "--url", col.http_url() or "", "-c", str(col.config_path))
    refused = run_cli(*args)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "store cannot write" in refused.stderr and "nothing forgotten" in refused.stderr
    assert "pi-0" in {d["id"] for d in col.api("/api/devices")["devices"]}
    small_disk.free()
    wait_until(lambda: "store: writing again" in col.log(), timeout=10)
    done = run_cli(*args)
    assert done.returncode == 0, done.stderr
    wait_until(lambda: "pi-0" not in stored_devices(small_disk.path))
    col.stop()
    again = start_collector(state_dir=small_disk.path, name="again")
    assert "pi-0" not in {d["id"] for d in again.api("/api/devices")["devices"]}


def test_a_forget_the_store_never_wrote_is_named_in_the_exit_log(
    collector: Collector,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A forget answered while the store worked, and the store failing from then until the
    stop: the exit log's "Lost:" names the forgotten id (it is back after a restart)."""
    c = collector
    heartbeats(c, "pi-x")
    assert c.flush()
    assert c.fleet.forget("pi-x")

    def full(*_: Any) -> None:
        raise StoreError("disk full")

    assert c.store is not None
    monkeypatch.setattr(c.store, "forget", full)
    monkeypatch.setattr(c.store, "write", full)
    with caplog.at_level(logging.ERROR):
        c.close()
    lost = [r.getMessage() for r in caplog.records if "Lost:" in r.getMessage()]
    assert len(lost) == 1 and "the forgets of 1 devices" in lost[0] and "pi-x" in lost[0]
    assert c._exit_status == 74
