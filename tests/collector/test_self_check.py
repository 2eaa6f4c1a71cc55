"""The dead man's switch pings while the collector is healthy, and only then."""

from __future__ import annotations

from alert_helpers import Hook, record

from fleetbeat.collector.alerts_config import SelfCheckSection
from fleetbeat.collector.self_check import SelfCheck
from helpers import wait_until


def test_pings_every_interval_while_healthy_only():
    """A GET each `every` while healthy() says yes; none while it says no."""
    hook = Hook()
    try:
        healthy = [True]
        check = SelfCheck(record(SelfCheckSection, {"url": hook.url + "/ping/abc", "every": "1m"}),
                          lambda: healthy[0])  # fmt: skip
        check.tick(0.0)
        wait_until(lambda: check.stats()["sent"] == 1)
        check.tick(30.0)  # not due yet
        healthy[0] = False
        check.tick(60.0)  # due, but unhealthy
        healthy[0] = True
        check.tick(119.0)
        check.tick(120.0)
        wait_until(lambda: check.stats()["sent"] == 2)
        assert [(m, p) for m, p, _, _ in hook.requests] == [("GET", "/ping/abc")] * 2
        assert check.stats()["unhealthy"] == 1
    finally:
        hook.close()


def test_a_hung_endpoint_skips_pings_instead_of_piling_them_up():
    """While one ping hangs, the next due one is skipped, and tick() returns at once."""
    hook = Hook(hang=True)
    try:
        check = SelfCheck(record(SelfCheckSection, {"url": hook.url, "every": "1s"}), lambda: True)
        check.tick(0.0)
        check.tick(1.0)
        assert check.stats()["busy"] == 1
        hook.release.set()
        wait_until(lambda: check.stats()["sent"] == 1)
    finally:
        hook.close()
