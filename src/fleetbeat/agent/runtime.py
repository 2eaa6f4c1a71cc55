"""The running agent: the scheduler loop, signals and systemd, over the pipeline.

The main thread sleeps in `select` until the next deadline or a signal; polled
sensors and heartbeats run there. Streaming sensors (serial) read in their own
threads and hand readings to the same pipeline (`agent.pipeline`). Nothing is
queued anywhere: a reading goes out at once or is dropped and counted. The
heartbeat's content is `agent.heartbeat`; a SIGHUP reload is `agent.reload`.
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
import time
from typing import Any, Callable, Optional

from fleetbeat import __version__
from fleetbeat.agent import reload as reloading
from fleetbeat.agent.config import (
    AgentConfig,
    SensorComponent,
    load_agent_config,
    signing_line,
    signing_mac,
)
from fleetbeat.agent.heartbeat import Heartbeat, system_config
from fleetbeat.agent.pipeline import MAX_METRICS_PER_SENSOR, Builder, Channel, Emitter, Show
from fleetbeat.agent.reload import JobSpec, stop_streaming
from fleetbeat.agent.scheduler import Scheduler
from fleetbeat.outputs.base import Identity, Outgoing
from fleetbeat.sdnotify import Notifier, Supervision
from fleetbeat.sensors.base import PolledSensor, Sensor, is_polled, is_streaming
from fleetbeat.sensors.system import SystemSensor

__all__ = ["MAX_METRICS_PER_SENSOR", "Agent", "Show"]

log = logging.getLogger(__name__)


class Agent:
    """Everything one `fleetbeat agent` process runs.

    Args:
        config: the validated configuration.
        show: called with (output name, payload, dropped) for every payload (`--show`).
        sysfs_root: where sysfs is mounted (tests use a prepared tree).
        clock: monotonic seconds; wall: epoch seconds; rng: uniform [0, 1) draws for the
            start offset and sampling (default: os.urandom / random.random).
        notifier: systemd notifications (default: from `$NOTIFY_SOCKET`, a no-op without).
    """

    def __init__(
        self,
        config: AgentConfig,
        *,
        show: Optional[Show] = None,
        sysfs_root: str = "/sys",
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        rng: Optional[Callable[[], float]] = None,
        notifier: Optional[Notifier] = None,
    ) -> None:
        self.config = config
        self._notifier = notifier
        self.scheduler: Optional[Scheduler] = None
        self.run_id = os.urandom(8).hex()
        self.build = Builder(clock=clock, wall=wall, sysfs_root=sysfs_root, rng=rng, show=show)
        self._clock = clock
        self._wall = wall
        self._jitter_draw = rng or _uniform
        self._stopping = False
        self._reload_requested = False
        self.ticks = 0

        system = self.build.system(system_config(config.sensors))
        self.heartbeat = Heartbeat(config.agent.heartbeat_metrics,
                                   config.agent.heartbeat_interval, system)  # fmt: skip
        self.identity = Identity(
            dev=config.agent.device_id,
            run=self.run_id,
            boot_time=int(self._boot_time()),
            version=__version__,
            tags=dict(config.agent.tags),
            mac=signing_mac(config.agent),
        )
        log.info("%s", signing_line(config.agent))
        self.emitters: list[Emitter] = [
            self.build.emitter(c, self.identity) for c in config.outputs
        ]
        self.sensors: list[Sensor] = []
        self.channels: dict[str, Channel] = {}
        for comp in config.sensors:
            sensor = self.build.sensor(comp, system)
            if sensor is not None:
                self.sensors.append(sensor)
                self.channels[sensor.name] = self.build.channel(sensor, comp, self.emit_readings)

    @property
    def system(self) -> SystemSensor:
        """The system sensor: it exists even when disabled, for the heartbeat's metrics."""
        return self.heartbeat.system

    def _boot_time(self) -> float:
        try:
            return self.system.boot_time()
        except Exception as exc:
            log.info("boot time not available (%s); bt will be 0", exc)
            return 0.0

    def running_sensor_components(self) -> list[SensorComponent]:
        """The components of `self.sensors`, in order; [] when they cannot be paired safely."""
        comps = [c for c in self.config.sensors if c.type != "system" or self.system.config.enabled]
        return comps if len(comps) == len(self.sensors) else []

    # --- the pipeline ---------------------------------------------------------------

    def emit_readings(self, src: str, metrics: dict[str, float], rate: float) -> None:
        msg = Outgoing("rd", ts=self._wall(), src=src, metrics=metrics, rate=rate)
        for em in self.emitters:
            em.emit(msg)

    def sensor_errors(self) -> dict[str, dict[str, int]]:
        return {s.name: dict(s.errors.by_reason) for s in self.sensors if s.errors.by_reason}

    def heartbeat_metrics(self) -> dict[str, float]:
        return self.heartbeat.metrics()

    def send_heartbeat(self, kind: str = "hb") -> None:
        hb = self.heartbeat
        metrics = hb.metrics() if kind == "hb" else {}
        errors = self.sensor_errors() if kind == "hb" else None
        ts = self._wall()
        for em in self.emitters:
            em.emit(hb.message(kind, ts, em.output.tally, metrics, errors))

    def read_sensor(self, sensor: PolledSensor) -> None:
        self.channels[sensor.name].offer(sensor.read())

    # --- running --------------------------------------------------------------------

    def request_stop(self) -> None:
        self._stopping = True

    def request_reload(self) -> None:
        self._reload_requested = True

    def start(self) -> Scheduler:
        """Start outputs and sensors; return the scheduler with every job added."""
        for em in self.emitters:
            em.output.start()
        if self.system.config.enabled:
            self.system.prime()
        for sensor in self.sensors:
            if is_streaming(sensor):
                sensor.start(self.channels[sensor.name].offer)
        sched = self.scheduler = Scheduler(self._clock)
        offset = self._jitter_draw() * self.config.agent.jitter
        first = self._clock() + offset
        for name, interval, fn, delay in self._jobs():
            sched.add(name, interval, fn, first=first + delay)
        log.info(
            "fleetbeat agent %s: device %s, run %s; outputs: %s; sensors: %s; first tick in %.1f s",
            __version__, self.identity.dev, self.run_id,
            ", ".join(em.output.name for em in self.emitters) or "none",
            ", ".join(_sensor_summary(s) for s in self.sensors) or "none",
            offset,
        )  # fmt: skip
        return sched

    def _jobs(self) -> list[JobSpec]:
        """(name, interval, function, delay after the schedule's start) of every job."""
        jobs: list[JobSpec] = []
        for sensor in self.sensors:  # sensors before the heartbeat: it carries their values
            if is_polled(sensor) and sensor.interval is not None:
                jobs.append((f"read {sensor.name}", sensor.interval,
                             _bind(self.read_sensor, sensor), 0.0))  # fmt: skip
        for name, channel in self.channels.items():
            every = channel.sampler.config.every
            if every is not None:
                jobs.append((f"flush {name}", every, channel.flush, every))
        jobs.append(("heartbeat", self.config.agent.heartbeat_interval, self.send_heartbeat, 0.0))
        return jobs

    def run(self, *, install_signals: bool = True) -> int:
        """Run until SIGTERM/SIGINT (or `request_stop`); send `bye`; return the exit status.

        Under systemd (`Type=notify`) it sends READY=1 once started, WATCHDOG=1 from
        this loop (the select never sleeps past a ping, so a stuck job stops the
        pings), STATUS= when the counts change, RELOADING=1/READY=1 around a SIGHUP
        reload and STOPPING=1 before the `bye`.
        """
        service = Supervision(self._notifier or Notifier(), self.status_line, clock=self._clock)
        selector = selectors.DefaultSelector()
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        selector.register(wake_r, selectors.EVENT_READ)
        previous: dict[signal.Signals, Any] = {}
        if install_signals:
            signal.set_wakeup_fd(wake_w)
            handlers = {
                signal.SIGTERM: lambda *_: self.request_stop(),
                signal.SIGINT: lambda *_: self.request_stop(),
                signal.SIGHUP: lambda *_: self.request_reload(),
            }
            for sig, handler in handlers.items():
                previous[sig] = signal.signal(sig, handler)
        try:
            sched = self.start()
            # READY once start() has sampled (the system sensor's priming read), opened
            # the outputs and started the streaming sensors: waiting for the first tick
            # would hold `systemctl start` for up to `jitter` seconds.
            service.ready()
            while not self._stopping:
                next_due = min(sched.run_due(), service.tick())
                self.ticks += 1
                if self._stopping:
                    break
                # capped: the kernel refuses timeouts of weeks, and an hour costs nothing
                selector.select(min(3600.0, max(0.0, next_due - self._clock())))
                _drain(wake_r)
                if self._reload_requested:
                    self._reload_requested = False
                    self._reload_from_file(service)
        finally:
            service.stopping()
            self.shutdown()
            if install_signals:
                signal.set_wakeup_fd(-1)
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
            selector.close()
            os.close(wake_r)
            os.close(wake_w)
        return 0

    def shutdown(self) -> None:
        """Send `bye` on every output, stop sensors, close outputs."""
        log.info("stopping: sending bye")
        for sensor in self.sensors:
            stop_streaming(sensor)
        self.send_heartbeat("bye")
        for em in self.emitters:
            em.output.close(timeout=0.5)
        for em in self.emitters:
            t = em.output.tally
            log.info(
                "%s: %d sent, %d dropped %s", em.output.name, t.sent, t.dropped, t.by_reason or ""
            )

    # --- systemd status and reload (SIGHUP) ------------------------------------------

    def status_line(self) -> str:
        """One line for `systemctl status`: messages sent and dropped, sensors with errors."""
        sent = sum(em.output.tally.sent for em in self.emitters)
        dropped = sum(em.output.tally.dropped for em in self.emitters)
        errors = [f"{name} ({sum(r.values())})" for name, r in self.sensor_errors().items()]
        failing = f"sensors with errors: {', '.join(errors)}" if errors else "no sensor errors"
        return f"{sent} messages sent, {dropped} dropped; {failing}"

    def _reload_from_file(self, service: Supervision) -> None:
        """Re-read the config file; apply it if valid, else log every error and keep going."""
        service.reload(self.config.source, lambda path: self.reload(load_agent_config(path)))

    def reload(self, config: AgentConfig) -> None:
        """Apply a new, validated configuration in place (`agent.reload` says how)."""
        reloading.apply(self, config)
        sched = self.scheduler
        if sched is not None:
            jitter = self.config.agent.jitter

            def spread(interval: float) -> float:
                return self._jitter_draw() * min(jitter, interval)

            jobs = reloading.reschedule(sched.jobs, self._jobs(), self._clock(), spread)
            sched.jobs = []
            for name, interval, fn, due in jobs:
                sched.add(name, interval, fn, first=due)
        log.info(
            "reloaded %s: outputs: %s; sensors: %s; heartbeat every %g s",
            config.source,
            ", ".join(em.output.name for em in self.emitters) or "none",
            ", ".join(_sensor_summary(s) for s in self.sensors) or "none",
            config.agent.heartbeat_interval,
        )


def _uniform() -> float:
    """A uniform draw in [0, 1) without importing `random` (memory on a Pi Zero)."""
    return int.from_bytes(os.urandom(7), "big") / 2**56


def _bind(fn: Callable[[Any], None], arg: Any) -> Callable[[], None]:
    return lambda: fn(arg)


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


def _sensor_summary(sensor: Sensor) -> str:
    every = f"every {sensor.interval:g} s" if sensor.interval else "streaming"
    return f"{sensor.name} {every}"
