"""SIGHUP: apply a new, validated configuration without a new run id or a `seq` reset.

First a pure plan from the old and the new configuration (`plan_outputs`,
`plan_sensors`, `reschedule`: no I/O, tested alone), then `apply`, which builds
everything new before it changes anything running: if building raises, the
running configuration stays as it was.

Outputs: one whose key (type, target, format: `OutputComponent.key`) is
unchanged keeps its Emitter, so its `seq` streams and drop counts continue (if
its other settings changed, a new output object takes over the same streams and
tally). A new output starts its own streams at 0; a removed one gets a `bye`,
then closes. Sensors: one whose config and sampling are unchanged keeps running
with its sampler state; the others are replaced (streaming ones stopped, new
ones started). Jobs whose interval is unchanged keep their phase; a changed one
runs within its new interval (spread by `jitter`) and never later than it was
due before.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Callable, Optional

from fleetbeat import __version__
from fleetbeat.agent.config import AgentConfig, OutputComponent, SensorComponent, signing_mac
from fleetbeat.agent.heartbeat import Heartbeat, system_config
from fleetbeat.agent.pipeline import Channel, Emitter
from fleetbeat.agent.scheduler import Job
from fleetbeat.config.frozen import dataclass
from fleetbeat.outputs.base import Encoder, Identity, Outgoing
from fleetbeat.sensors.base import Sensor, is_streaming

if TYPE_CHECKING:
    from fleetbeat.agent.runtime import Agent

log = logging.getLogger(__name__)

JobSpec = tuple[str, float, Callable[[], None], float]  # (name, interval, fn, first delay)


@dataclass(frozen=True)
class OutputStep:
    """What becomes of one output of the new configuration."""

    comp: OutputComponent
    old: Optional[int]  # index of the old output it continues (same key); None: a new one
    rebuild: bool  # a new output object takes over the old one's streams (settings changed)


def plan_outputs(
    old: Sequence[OutputComponent], new: Sequence[OutputComponent], *, same_device: bool
) -> tuple[list[OutputStep], list[int]]:
    """The step for each new output, and the old outputs removed (by index)."""
    free = list(range(len(old)))
    steps = []
    for comp in new:
        match = next((i for i in free if old[i].key() == comp.key()), None)
        if match is None:
            steps.append(OutputStep(comp, None, rebuild=True))
            continue
        free.remove(match)
        unchanged = old[match].config == comp.config and same_device
        steps.append(OutputStep(comp, match, rebuild=not unchanged))
    return steps, free


def plan_sensors(
    running: Sequence[SensorComponent], new: Sequence[SensorComponent]
) -> list[Optional[int]]:
    """For each new sensor component, the index of the running one it keeps, or None."""
    free = list(range(len(running)))
    kept: list[Optional[int]] = []
    for comp in new:
        same = (comp.type, comp.config, comp.sampling)
        match = next((i for i in free if (running[i].type, running[i].config,
                                           running[i].sampling) == same), None)  # fmt: skip
        if match is not None:
            free.remove(match)
        kept.append(match)
    return kept


def reschedule(
    old: Sequence[Job], jobs: Sequence[JobSpec], now: float, spread: Callable[[float], float]
) -> list[tuple[str, float, Callable[[], None], float]]:
    """(name, interval, fn, first due) for each job; `spread(interval)` is its jitter."""
    before = {job.name: job for job in old}
    out = []
    for name, interval, fn, delay in jobs:
        prev = before.get(name)
        if prev is not None and prev.interval == interval:
            due = prev.due
        else:
            due = now + delay + spread(interval)
            if prev is not None:
                due = min(due, prev.due)
        out.append((name, interval, fn, due))
    return out


def apply(agent: Agent, config: AgentConfig) -> None:
    """Build what `config` needs, then swap it in (see the module docstring)."""
    build = agent.build
    identity = Identity(dev=config.agent.device_id, run=agent.run_id,
                        boot_time=agent.identity.boot_time, version=__version__,
                        tags=dict(config.agent.tags), mac=signing_mac(config.agent))  # fmt: skip
    # --- build (may raise; nothing running has been touched) ---
    same_device = identity.dev == agent.identity.dev
    steps, removed_at = plan_outputs(agent.config.outputs, config.outputs, same_device=same_device)
    emitters: list[Emitter] = []
    encoders: list[tuple[Emitter, Encoder]] = []  # kept emitters get the new identity
    fresh: list[Emitter] = []  # outputs to start
    retired: list[Emitter] = []  # replaced by a new output object: closed, no bye
    for step in steps:
        if step.old is None:
            em = build.emitter(step.comp, identity)
            fresh.append(em)
        elif not step.rebuild:
            em = agent.emitters[step.old]
            encoders.append((em, build.encoder(step.comp, identity)))
        else:
            old_em = agent.emitters[step.old]
            fresh_em = build.emitter(step.comp, identity)
            em = old_em.successor(fresh_em.output, fresh_em.encoder)
            retired.append(old_em)
            fresh.append(em)
        emitters.append(em)
    removed = [agent.emitters[i] for i in removed_at]  # gone for good: bye, then close

    system = agent.system
    system_cfg = system_config(config.sensors)
    if system_cfg != system.config:
        system = build.system(system_cfg)
    running = agent.running_sensor_components()
    sensors: list[Sensor] = []
    channels: dict[str, Channel] = {}
    for comp, keep in zip(config.sensors, plan_sensors(running, config.sensors)):
        if keep is not None:
            sensor = agent.sensors[keep]
            channels[sensor.name] = agent.channels[sensor.name]
        else:
            built = build.sensor(comp, system)
            if built is None:
                continue
            sensor = built
            channels[sensor.name] = build.channel(sensor, comp, agent.emit_readings)
        sensors.append(sensor)
    kept_sensors = [s for s in sensors if any(s is o for o in agent.sensors)]
    gone_sensors = [s for s in agent.sensors if not any(s is k for k in kept_sensors)]
    new_sensors = [s for s in sensors if not any(s is k for k in kept_sensors)]

    # --- commit ---
    for sensor in gone_sensors:
        stop_streaming(sensor)
    if agent.config.agent.log_level != config.agent.log_level:
        log.warning("log_level changes at the next restart, not on reload")
    agent.config = config
    agent.identity = identity
    for em, encoder in encoders:
        em.encoder = encoder
    agent.emitters = emitters
    for em in removed:  # tell that collector the device is gone from it
        em.emit(Outgoing("bye", ts=build.wall()))
    for em in removed + retired:
        em.output.close(timeout=0.5)
    for em in fresh:
        em.output.start()
    if system is not agent.system and system.config.enabled:
        system.prime()
    agent.heartbeat = Heartbeat(config.agent.heartbeat_metrics,
                                config.agent.heartbeat_interval, system)  # fmt: skip
    agent.sensors = sensors
    agent.channels = channels
    for sensor in new_sensors:
        if is_streaming(sensor):
            try:
                sensor.start(channels[sensor.name].offer)
            except Exception:
                log.exception("sensor %s did not start", sensor.name)


def stop_streaming(sensor: Sensor) -> None:
    """Stop a streaming sensor's reader; a sensor that fails to stop is logged, not raised."""
    if is_streaming(sensor):
        try:
            sensor.stop()
        except Exception:
            log.exception("sensor %s did not stop cleanly", sensor.name)
