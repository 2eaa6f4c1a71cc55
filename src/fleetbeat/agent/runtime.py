"""The running agent: sensors -> sampler -> encoder -> output, on one scheduler loop.

The main thread sleeps in `select` until the next deadline or a signal; polled
sensors and heartbeats run there. Streaming sensors (serial) read in their own
threads and hand readings to the same pipeline, guarded by a lock per sensor
and per output. Nothing is queued anywhere: a reading goes out at once or is
dropped and counted.
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
import threading
import time
from typing import Any, Callable, Optional

from fleetbeat import __version__, wire
from fleetbeat.agent.config import AgentConfig, Component, load_agent_config
from fleetbeat.agent.sampling import Sampler
from fleetbeat.agent.scheduler import Scheduler
from fleetbeat.outputs import ENCODERS, OUTPUTS, load
from fleetbeat.outputs.base import Encoder, Identity, Outgoing, Output
from fleetbeat.sdnotify import Notifier, Supervision
from fleetbeat.sensors import SENSORS
from fleetbeat.sensors.base import SensorErrors
from fleetbeat.sensors.system import SystemConfig, SystemSensor, metric_group

log = logging.getLogger(__name__)

Show = Callable[[str, bytes, bool], None]  # (output name, payload, dropped)


class Emitter:
    """One output with its encoder and its own `seq` streams (hb+bye, rd)."""

    def __init__(self, output: Output, encoder: Encoder, *, show: Optional[Show] = None) -> None:
        self.output = output
        self.encoder = encoder
        self.seq = {"hb": 0, "rd": 0}
        self._stream = "hb"
        self._lock = threading.Lock()
        self._show = show

    def _next_seq(self) -> int:
        n = self.seq[self._stream]
        self.seq[self._stream] = n + 1
        return n

    def emit(self, msg: Outgoing) -> None:
        output = self.output
        with self._lock:
            self._stream = "rd" if msg.kind == "rd" else "hb"
            payloads, too_large = self.encoder.encode(msg, self._next_seq, output.max_payload)
            if too_large:
                output.tally.drop("too_large", f"a {msg.kind} part over the size limit", too_large)
            if self._show is None:
                for payload in payloads:
                    output.send(payload, msg)
                return
            tally = output.tally
            for payload in payloads:
                before = tally.dropped
                output.send(payload, msg)
                self._show(output.name, payload, tally.dropped > before)


MAX_METRICS_PER_SENSOR = 1024


class Channel:
    """One sensor's path into the pipeline: clean, sample, emit to every output.

    A sensor may report at most MAX_METRICS_PER_SENSOR distinct metric names: a
    garbled serial line or interface churn must not grow the sampler's per-metric
    state without bound. New names past the cap are dropped and counted.
    """

    def __init__(self, name: str, sampler: Sampler, agent: Agent, errors: SensorErrors) -> None:
        self.name = name
        self.sampler = sampler
        self._agent = agent
        self._errors = errors
        self._known: set[str] = set()
        self._lock = threading.Lock()

    def offer(self, metrics: dict[str, Any]) -> None:
        clean = wire.clean_metrics(metrics)
        if not clean:
            return
        with self._lock:
            known = self._known
            if not known.issuperset(clean):
                for name in [n for n in clean if n not in known]:
                    if len(known) < MAX_METRICS_PER_SENSOR:
                        known.add(name)
                    else:
                        del clean[name]
                        self._errors.count("too_many_metrics", f"{name!r} left out")
                if not clean:
                    return
            out = self.sampler.offer(clean)
        if out:
            self._agent.emit_readings(self.name, out, self.sampler.config.rate)

    def flush(self) -> None:
        with self._lock:
            out = self.sampler.flush()
        if out:
            self._agent.emit_readings(self.name, out, self.sampler.config.rate)


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
        self._show = show
        self._clock = clock
        self._wall = wall
        self._rng = rng
        self._jitter_draw = rng or _uniform
        self._sysfs_root = sysfs_root
        self._stopping = False
        self._reload_requested = False
        self.ticks = 0

        system_cfg = _system_config(config)
        self.system = SystemSensor(system_cfg, sysfs_root=sysfs_root, clock=clock, wall=wall)
        self._hb_only_groups = _heartbeat_only_groups(config, system_cfg)
        self.identity = Identity(
            dev=config.agent.device_id,
            run=self.run_id,
            boot_time=int(self._boot_time()),
            version=__version__,
            tags=dict(config.agent.tags),
        )
        self.emitters = [self._build_emitter(c, self.identity) for c in config.outputs]
        self.sensors: list[Any] = []
        self.channels: dict[str, Channel] = {}
        for comp in config.sensors:
            sensor = self._build_sensor(comp, self.system)
            if sensor is not None:
                self.sensors.append(sensor)
                self.channels[sensor.name] = self._build_channel(sensor, comp)

    # --- building -------------------------------------------------------------------

    def _boot_time(self) -> float:
        try:
            return self.system.boot_time()
        except Exception as exc:
            log.info("boot time not available (%s); bt will be 0", exc)
            return 0.0

    def _build_output(self, comp: Component, identity: Identity) -> Output:
        cls = load(OUTPUTS[comp.type])
        # topic-based outputs (MQTT) put the device id in their topics
        extra = {"identity": identity} if getattr(cls, "uses_identity", False) else {}
        output: Output = cls(comp.config, name=_output_name(comp), **extra)
        return output

    @staticmethod
    def _build_encoder(comp: Component, identity: Identity) -> Encoder:
        encoder: Encoder = load(ENCODERS[getattr(comp.config, "format", "json")])(
            identity, comp.config
        )
        return encoder

    def _build_emitter(self, comp: Component, identity: Identity) -> Emitter:
        output = self._build_output(comp, identity)
        return Emitter(output, self._build_encoder(comp, identity), show=self._show)

    @staticmethod
    def _build_sensor(comp: Component, system: SystemSensor) -> Any:
        """The sensor for `comp`; the one system sensor (None when disabled) for "system"."""
        if comp.type == "system":
            return system if comp.config.enabled else None
        return load(SENSORS[comp.type])(comp.config)

    def _build_channel(self, sensor: Any, comp: Component) -> Channel:
        sampler = Sampler(comp.config.sampling, clock=self._clock, rng=self._rng)
        return Channel(sensor.name, sampler, self, sensor.errors)

    # --- the pipeline ---------------------------------------------------------------

    def emit_readings(self, src: str, metrics: dict[str, float], rate: float) -> None:
        msg = Outgoing("rd", ts=self._wall(), src=src, metrics=metrics, rate=rate)
        for em in self.emitters:
            em.emit(msg)

    def sensor_errors(self) -> dict[str, dict[str, int]]:
        return {s.name: dict(s.errors.by_reason) for s in self.sensors if s.errors.by_reason}

    def heartbeat_metrics(self) -> dict[str, float]:
        names = self.config.agent.heartbeat_metrics
        if not names:
            return {}
        system = self.system
        source = system.last if system.config.enabled else {}  # already clean numbers
        # groups the sensor does not read for readings are read here, for the heartbeat
        groups = self._hb_only_groups
        if groups:
            source = {**source, **wire.clean_metrics(system.read(groups))}
        return {n: source[n] for n in names if n in source}

    def send_heartbeat(self, kind: str = "hb") -> None:
        metrics = self.heartbeat_metrics() if kind == "hb" else {}
        errors = self.sensor_errors() if kind == "hb" else None
        ts = self._wall()
        for em in self.emitters:
            tally = em.output.tally
            em.emit(
                Outgoing(
                    kind,
                    ts=ts,
                    metrics=metrics,
                    interval=self.config.agent.heartbeat_interval,
                    drop=tally.dropped,
                    drop_by=dict(tally.by_reason) if tally.by_reason else None,
                    errors=errors,
                )
            )

    def read_sensor(self, sensor: Any) -> None:
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
            if sensor.interval is None:
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

    def _jobs(self) -> list[tuple[str, float, Callable[[], None], float]]:
        """(name, interval, function, delay after the schedule's start) of every job."""
        jobs = []
        for sensor in self.sensors:  # sensors before the heartbeat: it carries their values
            if sensor.interval is not None:
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
            _stop_streaming(sensor)
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
        """Apply a new, validated configuration without a new run id or a `seq` reset.

        Outputs: one whose type, host, port and format are unchanged keeps its
        Emitter, so its `seq` streams and drop counts continue (if its other
        settings changed, a new output object takes over the same tally). A new
        output starts its own streams at 0; a removed one gets a `bye`, then closes.
        Sensors: one whose config is unchanged keeps running with its sampler state;
        the others are replaced (streaming ones stopped, new ones started). Jobs
        whose interval is unchanged keep their phase; a changed one runs within its
        new interval (spread by `jitter`) and never later than it was due before.
        Everything new is built before anything is changed: if building raises,
        the running configuration stays as it was.
        """
        identity = Identity(
            dev=config.agent.device_id,
            run=self.run_id,
            boot_time=self.identity.boot_time,
            version=__version__,
            tags=dict(config.agent.tags),
        )
        # --- build (may raise; nothing running has been touched) ---
        old_outputs = list(zip(self.config.outputs, self.emitters))
        emitters: list[Emitter] = []
        encoders: list[tuple[Emitter, Encoder]] = []  # kept emitters get the new identity
        fresh: list[Emitter] = []  # outputs to start
        retired: list[Emitter] = []  # replaced by a new output object: closed, no bye
        for comp in config.outputs:
            match = next((p for p in old_outputs if _output_key(p[0]) == _output_key(comp)), None)
            if match is None:
                em = self._build_emitter(comp, identity)
                fresh.append(em)
            else:
                old_outputs.remove(match)
                old_comp, em = match
                if old_comp.config == comp.config and identity.dev == self.identity.dev:
                    encoders.append((em, self._build_encoder(comp, identity)))
                else:
                    successor = self._build_emitter(comp, identity)
                    successor.output.tally = em.output.tally  # drop counts continue
                    successor.seq = em.seq  # the seq streams continue
                    successor._lock = em._lock  # a streaming thread may still hold `em`
                    retired.append(em)
                    fresh.append(successor)
                    em = successor
            emitters.append(em)
        removed = [em for _, em in old_outputs]  # gone for good: bye, then close

        old_sensors = self._sensor_pairs()
        system = self.system
        system_cfg = _system_config(config)
        if system_cfg != self.system.config:
            system = SystemSensor(system_cfg, sysfs_root=self._sysfs_root, clock=self._clock,
                                  wall=self._wall)  # fmt: skip
        sensors: list[Any] = []
        channels: dict[str, Channel] = {}
        for comp in config.sensors:
            match_s = next((p for p in old_sensors if (p[0].type, p[0].config) ==
                            (comp.type, comp.config)), None)  # fmt: skip
            if match_s is not None:
                old_sensors.remove(match_s)
                sensor = match_s[1]
                channels[sensor.name] = self.channels[sensor.name]
            else:
                sensor = self._build_sensor(comp, system)
                if sensor is None:
                    continue
                channels[sensor.name] = self._build_channel(sensor, comp)
            sensors.append(sensor)
        kept_sensors = [s for s in sensors if any(s is o for o in self.sensors)]
        gone_sensors = [s for s in self.sensors if not any(s is k for k in kept_sensors)]
        new_sensors = [s for s in sensors if not any(s is k for k in kept_sensors)]

        # --- commit ---
        for sensor in gone_sensors:
            _stop_streaming(sensor)
        if self.config.agent.log_level != config.agent.log_level:
            log.warning("log_level changes at the next restart, not on reload")
        self.config = config
        self.identity = identity
        for em, encoder in encoders:
            em.encoder = encoder
        self.emitters = emitters
        for em in removed:  # tell that collector the device is gone from it
            em.emit(Outgoing("bye", ts=self._wall()))
        for em in removed + retired:
            em.output.close(timeout=0.5)
        for em in fresh:
            em.output.start()
        if system is not self.system and system.config.enabled:
            system.prime()
        self.system = system
        self._hb_only_groups = _heartbeat_only_groups(config, system.config)
        self.sensors = sensors
        self.channels = channels
        for sensor in new_sensors:
            if sensor.interval is None:
                try:
                    sensor.start(channels[sensor.name].offer)
                except Exception:
                    log.exception("sensor %s did not start", sensor.name)
        if self.scheduler is not None:
            self._reschedule(self.scheduler)
        log.info(
            "reloaded %s: outputs: %s; sensors: %s; heartbeat every %g s",
            config.source,
            ", ".join(em.output.name for em in self.emitters) or "none",
            ", ".join(_sensor_summary(s) for s in self.sensors) or "none",
            config.agent.heartbeat_interval,
        )

    def _sensor_pairs(self) -> list[tuple[Component, Any]]:
        """(config component, running sensor) pairs, in the order __init__ built them."""
        comps = [c for c in self.config.sensors if c.type != "system" or c.config.enabled]
        if len(comps) != len(self.sensors):  # cannot pair them safely: rebuild every sensor
            return []
        return list(zip(comps, self.sensors))

    def _reschedule(self, sched: Scheduler) -> None:
        old = {job.name: job for job in sched.jobs}
        now = self._clock()
        sched.jobs = []
        for name, interval, fn, delay in self._jobs():
            prev = old.get(name)
            if prev is not None and prev.interval == interval:
                due = prev.due
            else:
                due = now + delay + self._jitter_draw() * min(self.config.agent.jitter, interval)
                if prev is not None:
                    due = min(due, prev.due)
            sched.add(name, interval, fn, first=due)


def _system_config(config: AgentConfig) -> SystemConfig:
    """The [sensors.system] table (config validation allows one), or a disabled one."""
    found = config.sensor_configs("system")
    return found[0] if found else SystemConfig(enabled=False)


def _stop_streaming(sensor: Any) -> None:
    """Stop a streaming sensor's reader; a sensor that fails to stop is logged, not raised."""
    if sensor.interval is None:
        try:
            sensor.stop()
        except Exception:
            log.exception("sensor %s did not stop cleanly", sensor.name)


def _heartbeat_only_groups(config: AgentConfig, system: SystemConfig) -> tuple[str, ...]:
    """System metric groups the heartbeat needs but the system sensor does not read."""
    wanted = dict.fromkeys(g for g in map(metric_group, config.agent.heartbeat_metrics) if g)
    return tuple(g for g in wanted if not system.enabled or g not in system.include)


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


def _output_key(comp: Component) -> tuple[Any, ...]:
    """What identifies an output across a reload: same key, same seq streams."""
    cfg = comp.config
    return (comp.type, getattr(cfg, "host", comp.path), getattr(cfg, "port", None),
            getattr(cfg, "format", None))  # fmt: skip


def _output_name(comp: Component) -> str:
    cfg = comp.config
    fmt = getattr(cfg, "format", None)
    if hasattr(cfg, "host"):
        host = f"[{cfg.host}]" if ":" in cfg.host else cfg.host
        where = f"{host}:{cfg.port}"
    else:
        where = comp.path
    return f"{comp.type} {where}" + (f" ({fmt})" if fmt else "")


def _sensor_summary(sensor: Any) -> str:
    every = f"every {sensor.interval:g} s" if sensor.interval else "streaming"
    return f"{sensor.name} {every}"
