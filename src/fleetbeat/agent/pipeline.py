"""The pipeline a reading takes: sensor -> Channel (clean, sample) -> Emitter (encode) -> output.

A Channel belongs to one sensor and hands what its sampler keeps to an `emit`
callable (the agent's fan-out to every Emitter). An Emitter belongs to one
output: it owns that output's `seq` streams (hb+bye, rd) and encodes each
message once for it. Streaming sensors call in from their own threads, so each
Channel and each Emitter holds a lock; nothing is queued anywhere.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Optional

from fleetbeat import registry, wire
from fleetbeat.agent.config import OutputComponent, SensorComponent
from fleetbeat.agent.sampling import Sampler
from fleetbeat.outputs.base import Encoder, Identity, Outgoing, Output
from fleetbeat.sensors.base import Clock, Sensor, SensorErrors
from fleetbeat.sensors.system import SystemConfig, SystemSensor

Show = Callable[[str, bytes, bool], None]  # (output name, payload, dropped)
EmitReadings = Callable[[str, dict[str, float], float], None]  # (src, metrics, rate)

MAX_METRICS_PER_SENSOR = 1024


class Emitter:
    """One output with its encoder and its own `seq` streams (hb+bye, rd)."""

    def __init__(self, output: Output, encoder: Encoder, *, show: Optional[Show] = None) -> None:
        self.output = output
        self.encoder = encoder
        self.seq = {"hb": 0, "rd": 0}
        self._stream = "hb"
        self._lock = threading.Lock()
        self._show = show

    def successor(self, output: Output, encoder: Encoder) -> Emitter:
        """An Emitter for `output`, which replaces this one's: it continues this one's seq
        streams and drop counts, and shares its lock (a streaming thread may still be
        emitting through this one while the reload runs)."""
        output.tally = self.output.tally
        new = Emitter(output, encoder, show=self._show)
        new.seq = self.seq
        new._lock = self._lock
        return new

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
    """One sensor's path into the pipeline: clean, sample, then `emit` what is kept.

    A sensor may report at most MAX_METRICS_PER_SENSOR distinct metric names: a
    garbled serial line or interface churn must not grow the sampler's per-metric
    state without bound. New names past the cap are dropped and counted.
    """

    def __init__(
        self, name: str, sampler: Sampler, emit: EmitReadings, errors: SensorErrors
    ) -> None:
        self.name = name
        self.sampler = sampler
        self._emit = emit
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
            self._emit(self.name, out, self.sampler.config.rate)

    def flush(self) -> None:
        with self._lock:
            out = self.sampler.flush()
        if out:
            self._emit(self.name, out, self.sampler.config.rate)


class Builder:
    """Builds pipeline parts with what the agent injects (clocks, sysfs root, rng, `--show`)."""

    def __init__(
        self,
        *,
        clock: Clock,
        wall: Clock,
        sysfs_root: str,
        rng: Optional[Callable[[], float]],
        show: Optional[Show],
    ) -> None:
        self.clock = clock
        self.wall = wall
        self.sysfs_root = sysfs_root
        self.rng = rng
        self.show = show

    def encoder(self, comp: OutputComponent, identity: Identity) -> Encoder:
        cls = registry.encoder_class(comp.encoding.format)
        return cls(identity, prefix=comp.encoding.prefix)

    def emitter(self, comp: OutputComponent, identity: Identity) -> Emitter:
        output = registry.output_class(comp.type)(comp.config, name=comp.name(), identity=identity)
        return Emitter(output, self.encoder(comp, identity), show=self.show)

    def system(self, config: SystemConfig) -> SystemSensor:
        return SystemSensor(config, clock=self.clock, wall=self.wall, sysfs_root=self.sysfs_root)

    def sensor(self, comp: SensorComponent, system: SystemSensor) -> Optional[Sensor]:
        """The sensor for `comp`; for "system", the agent's one system sensor (None if off)."""
        if comp.type == "system":
            return system if system.config.enabled else None
        cls = registry.sensor_class(comp.type)
        return cls(comp.config, clock=self.clock, wall=self.wall, sysfs_root=self.sysfs_root)

    def channel(self, sensor: Sensor, comp: SensorComponent, emit: EmitReadings) -> Channel:
        sampler = Sampler(comp.sampling, clock=self.clock, rng=self.rng)
        return Channel(sensor.name, sampler, emit, sensor.errors)
