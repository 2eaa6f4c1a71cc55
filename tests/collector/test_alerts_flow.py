"""The alert modules on a real Fleet fed wire v1 heartbeats: the events and device dicts
the main loop will hand over, through to a webhook on a local HTTP server."""

from __future__ import annotations

from typing import Any

from alert_helpers import Hook, alerts_config
from test_notifiers import notifiers

from fleetbeat import wire
from fleetbeat.collector.alerts import Alerts
from fleetbeat.collector.config import parse_collector_config
from fleetbeat.collector.fleet import Fleet
from fleetbeat.collector.outbox import Dispatcher, Outbox
from helpers import FakeClock, wait_until

T0 = 1_764_000_000.0
BARN = ("pi-barn-01", "pi-barn-02", "pi-barn-07")


class Loop:
    """What the main loop will do each turn, with the clock in the test's hands."""

    def __init__(self, tmp_path: Any, hook: Hook) -> None:
        self.clock = FakeClock(T0)
        config = parse_collector_config({"collector": {"down_after": 3}}, "t").collector
        self.fleet = Fleet(config, clock=self.clock, monotonic=self.clock)
        self.alerts = Alerts(alerts_config(group_wait="5s", group_interval="10s"))
        self.box = Outbox(str(tmp_path))
        self.dispatcher = Dispatcher(notifiers({"type": "webhook", "url": hook.url}), self.box,
                                     clock=self.clock)  # fmt: skip
        self.seq: dict[str, int] = {}

    def heartbeat(self, dev: str, site: str, run: str = "0123456789abcdef", bt: int = 1) -> None:
        seq = self.seq[dev] = self.seq.get(dev, -1) + 1
        msg = {"v": 1, "k": "hb", "dev": dev, "run": run, "seq": seq, "ts": self.clock.now,
               "int": 10, "bt": bt, "tags": {"site": site}, "m": {"temp": 40.0}}  # fmt: skip
        self.fleet.receive(wire.dumps(msg), ("127.0.0.1", 4000))

    def turn(self) -> None:
        now = self.clock.now
        self.fleet.check()
        _, events = self.fleet.take_changes()
        self.alerts.evaluate(self.fleet.devices(), now)
        self.alerts.observe(events, now)
        for n in self.alerts.tick(now):
            self.dispatcher.submit(n, now)
        self.dispatcher.pump(now)

    def run_for(self, seconds: float, *alive: tuple[str, str]) -> None:
        end = self.clock.now + seconds
        while self.clock.now < end:
            for dev, site in alive:
                if int(self.clock.now) % 10 == 0:
                    self.heartbeat(dev, site)
            self.turn()
            self.clock.now += 1

    def close(self) -> None:
        self.dispatcher.close()
        self.box.close()


def test_three_barn_devices_dying_are_one_post_and_one_coming_back_is_another(tmp_path):
    """Three dead barn agents: one POST naming all three; one restarts: its resolution."""
    hook = Hook()
    loop = Loop(tmp_path, hook)
    try:
        everyone = [*((d, "barn") for d in BARN), ("pi-shed-01", "shed")]
        loop.run_for(30, *everyone)
        assert hook.requests == []
        loop.run_for(40, ("pi-shed-01", "shed"))  # the barn goes dark: down after 30 s
        wait_until(lambda: (loop.dispatcher.pump(), hook.requests)[1])
        (first,) = hook.bodies()
        assert first["summary"] == "3 devices down at site=barn: pi-barn-01, pi-barn-02, pi-barn-07"
        went_down = max(a["started"] for a in first["alerts"])
        assert went_down == T0 + 20 + 30  # the last heartbeat, then three 10 s intervals
        assert first["time"] - went_down <= 5 + 1  # group_wait, and the loop's 1 s turn
        # one barn agent starts again (a new run, same boot): back up, and a restart
        loop.heartbeat("pi-barn-02", "barn", run="fedcba9876543210")
        loop.run_for(15, ("pi-shed-01", "shed"), ("pi-barn-02", "barn"))
        wait_until(lambda: (loop.dispatcher.pump(), len(hook.requests) == 2)[1])
        second = hook.bodies()[1]
        assert second["summary"] == "1 device back up at site=barn: pi-barn-02"
        assert second["counts"] == {"firing": 2, "resolved": 1}
    finally:
        loop.close()
        hook.close()
