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
from fleetbeat.agent.sampling import Sampler
from fleetbeat.agent.scheduler import Scheduler
from fleetbeat.config.agent import AgentConfig, Component
from fleetbeat.outputs import ENCODERS, OUTPUTS, load
from fleetbeat.outputs.base import Encoder, Identity, Outgoing, Output
from fleetbeat.sensors import SENSORS
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


class Channel:
    """One sensor's path into the pipeline: clean, sample, emit to every output."""

    def __init__(self, name: str, sampler: Sampler, agent: Agent) -> None:
        self.name = name
        self.sampler = sampler
        self._agent = agent
        self._lock = threading.Lock()

    def offer(self, metrics: dict[str, Any]) -> None:
        clean = wire.clean_metrics(metrics)
        if not clean:
            return
        with self._lock:
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
    ) -> None:
        self.config = config
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

        system_cfgs = config.sensor_configs("system")
        system_cfg = system_cfgs[0] if system_cfgs else SystemConfig(enabled=False)
        self.system = SystemSensor(system_cfg, sysfs_root=sysfs_root, clock=clock, wall=wall)
        self.identity = Identity(
            dev=config.agent.device_id,
            run=self.run_id,
            boot_time=int(self._boot_time()),
            version=__version__,
            tags=dict(config.agent.tags),
        )
        self.emitters = [self._build_emitter(c) for c in config.outputs]
        self.sensors: list[Any] = []
        self.channels: dict[str, Channel] = {}
        for comp in config.sensors:
            sensor = self._build_sensor(comp)
            if sensor is None:
                continue
            self.sensors.append(sensor)
            sampler = Sampler(comp.config.sampling, clock=clock, rng=rng)
            self.channels[sensor.name] = Channel(sensor.name, sampler, self)

    # --- building -------------------------------------------------------------------

    def _boot_time(self) -> float:
        try:
            return self.system.boot_time()
        except Exception as exc:
            log.info("boot time not available (%s); bt will be 0", exc)
            return 0.0

    def _build_emitter(self, comp: Component) -> Emitter:
        cls = load(OUTPUTS[comp.type])
        # topic-based outputs (MQTT) put the device id in their topics
        extra = {"identity": self.identity} if getattr(cls, "uses_identity", False) else {}
        output = cls(comp.config, name=_output_name(comp), **extra)
        fmt = getattr(comp.config, "format", "json")
        encoder = load(ENCODERS[fmt])(self.identity, comp.config)
        return Emitter(output, encoder, show=self._show)

    def _build_sensor(self, comp: Component) -> Any:
        if comp.type == "system":
            return self.system if comp.config.enabled else None
        return load(SENSORS[comp.type])(comp.config)

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
        if self.system.config.enabled:
            source = self.system.last  # the sensor's own values: already clean numbers
        else:
            groups = tuple(dict.fromkeys(g for g in map(metric_group, names) if g))
            source = wire.clean_metrics(self.system.read(groups))
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
        sched = Scheduler(self._clock)
        offset = self._jitter_draw() * self.config.agent.jitter
        first = self._clock() + offset
        for sensor in self.sensors:  # sensors before the heartbeat: it carries their values
            if sensor.interval is not None:
                sched.add(f"read {sensor.name}", sensor.interval, _bind(self.read_sensor, sensor),
                          first=first)  # fmt: skip
        for name, channel in self.channels.items():
            every = channel.sampler.config.every
            if every is not None:
                sched.add(f"flush {name}", every, channel.flush, first=first + every)
        sched.add("heartbeat", self.config.agent.heartbeat_interval, self.send_heartbeat,
                  first=first)  # fmt: skip
        log.info(
            "fleetbeat agent %s: device %s, run %s; outputs: %s; sensors: %s; first tick in %.1f s",
            __version__, self.identity.dev, self.run_id,
            ", ".join(em.output.name for em in self.emitters) or "none",
            ", ".join(_sensor_summary(s) for s in self.sensors) or "none",
            offset,
        )  # fmt: skip
        return sched

    def run(self, *, install_signals: bool = True) -> int:
        """Run until SIGTERM/SIGINT (or `request_stop`); send `bye`; return the exit status."""
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
            while not self._stopping:
                next_due = sched.run_due()
                self.ticks += 1
                if self._stopping:
                    break
                selector.select(max(0.0, next_due - self._clock()))
                _drain(wake_r)
                if self._reload_requested:
                    self._reload_requested = False
                    log.warning("reload requested: not supported yet, keeping the running config")
        finally:
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
            if sensor.interval is None:
                try:
                    sensor.stop()
                except Exception:
                    log.exception("sensor %s did not stop cleanly", sensor.name)
        self.send_heartbeat("bye")
        for em in self.emitters:
            em.output.close(timeout=0.5)
        for em in self.emitters:
            t = em.output.tally
            log.info(
                "%s: %d sent, %d dropped %s", em.output.name, t.sent, t.dropped, t.by_reason or ""
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
