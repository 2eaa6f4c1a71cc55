"""The reload plan is a pure function of the old and new outputs and sensors."""

from __future__ import annotations

from fleetbeat.agent.config import OutputComponent, SensorComponent
from fleetbeat.agent.reload import plan_outputs, plan_sensors, reschedule
from fleetbeat.agent.sampling import SamplingConfig
from fleetbeat.agent.scheduler import Job
from fleetbeat.outputs.udp import UdpConfig
from fleetbeat.sensors.serial_port import SerialConfig


class Hostless:
    """An output config without host or port (a file, a socket path): target() keys it."""

    def __init__(self, target: str, extra: int = 0) -> None:
        self._target = target
        self.extra = extra

    def target(self) -> str:
        return self._target

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Hostless) and (self._target, self.extra) == (
            other._target,
            other.extra,
        )

    __hash__ = None  # type: ignore[assignment]


def out(config, path="outputs.x[0]", type_="x"):
    return OutputComponent(type_, path, config)


def test_reordered_outputs_without_a_host_keep_their_streams():
    """Swapping two host-less outputs pairs each with its old self, at its new position."""
    a, b = Hostless("/run/a"), Hostless("/run/b")
    steps, removed = plan_outputs([out(a), out(b, "outputs.x[1]")],
                                  [out(b), out(a, "outputs.x[1]")], same_device=True)  # fmt: skip
    assert [(s.old, s.rebuild) for s in steps] == [(1, False), (0, False)]
    assert removed == []


def test_changed_settings_rebuild_the_output_on_the_same_streams():
    """Same target and format, other settings changed: a new object continues the old streams."""
    steps, removed = plan_outputs(
        [out(UdpConfig(port=1), type_="udp")],
        [
            out(UdpConfig(port=1, max_datagram=512), type_="udp"),
            out(UdpConfig(port=2), type_="udp"),
        ],
        same_device=True,
    )
    assert [(s.old, s.rebuild) for s in steps] == [(0, True), (None, True)]
    assert removed == []


def test_a_new_device_id_rebuilds_even_unchanged_outputs():
    """Topics carry the device id: a renamed device gets new output objects, same streams."""
    steps, removed = plan_outputs([out(Hostless("t"))], [], same_device=False)
    assert steps == [] and removed == [0]
    steps, _ = plan_outputs([out(Hostless("t"))], [out(Hostless("t"))], same_device=False)
    assert [(s.old, s.rebuild) for s in steps] == [(0, True)]


def test_sensors_are_kept_only_when_config_and_sampling_are_unchanged():
    """A sensor whose sampling table changed is rebuilt; an unchanged one is kept."""
    a = SensorComponent("serial", "s[0]", SerialConfig(name="a", port="/x"))
    b = SensorComponent("serial", "s[1]", SerialConfig(name="b", port="/y"))
    b2 = SensorComponent("serial", "s[1]", b.config, SamplingConfig(rate=0.5))
    assert plan_sensors([a, b], [b, a]) == [1, 0]
    assert plan_sensors([a, b], [a, b2]) == [0, None]


def test_reschedule_keeps_the_phase_of_unchanged_jobs_and_never_delays_changed_ones():
    """An unchanged interval keeps its due time; a changed one is due no later than before."""
    fn = lambda: None  # noqa: E731
    old = [Job("heartbeat", 10.0, fn, due=105.0), Job("read system", 10.0, fn, due=101.0)]
    jobs = [("read system", 10.0, fn, 0.0), ("heartbeat", 2.0, fn, 0.0), ("flush s", 5.0, fn, 5.0)]
    due = {name: d for name, _, _, d in reschedule(old, jobs, 100.0, lambda interval: 1.0)}
    assert due == {"read system": 101.0, "heartbeat": 101.0, "flush s": 106.0}
