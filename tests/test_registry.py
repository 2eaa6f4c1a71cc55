"""Every registry entry loads, meets its kind's Protocol, and documents a valid TOML sample."""

from __future__ import annotations

import importlib
import inspect
import re

import pytest

from fleetbeat import registry
from fleetbeat.agent.config import parse_agent_config
from fleetbeat.collector.config import CollectorSection, MqttSection, parse_collector_config
from fleetbeat.collector.fleet import Fleet
from fleetbeat.collector.notifiers import base as notifiers_base
from fleetbeat.collector.receivers import base as receivers_base
from fleetbeat.collector.receivers.amqp_consume import AmqpSection
from fleetbeat.collector.receivers.kafka_consume import KafkaSection
from fleetbeat.config import frozen
from fleetbeat.config.loader import parse_toml
from fleetbeat.errors import FleetbeatError
from fleetbeat.outputs import base as outputs_base
from fleetbeat.sensors import base as sensors_base
from helpers import FakeClock

IDENTITY = outputs_base.Identity(dev="d", run="0" * 16, boot_time=0, version="t", tags={})
KINDS = {"sensor": registry.SENSORS, "encoder": registry.ENCODERS, "output": registry.OUTPUTS}
ENTRIES = [pytest.param(k, name, id=f"{k}:{name}") for k, table in KINDS.items() for name in table]
# A [collector] section that enables every receiver, on loopback ports the kernel picks
ALL_RECEIVERS = CollectorSection(udp_listen="127.0.0.1:0", mqtt=MqttSection(port=1),
                                 kafka=KafkaSection(), http_ingest_listen="127.0.0.1:0",
                                 amqp=AmqpSection())  # fmt: skip
# What every sensor's and output's Config is built with in these tests: a valid minimum
REQUIRED = {"serial": {"port": "/dev/ttyUSB0"}}


def keywords(cls: type) -> set[str]:
    """The keyword-only parameters of a class's constructor."""
    params = inspect.signature(cls).parameters.values()
    return {p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}


def build_config(name: str, cls: type) -> object:
    config_cls = cls.Config  # type: ignore[attr-defined]
    return config_cls(**REQUIRED.get(name, {}))


@pytest.mark.parametrize(("kind", "name"), ENTRIES)
def test_entry_meets_its_protocol(kind, name):
    """Each entry imports, has the fixed constructor keywords and the members its Protocol names."""
    module, _, attr = KINDS[kind][name].partition(":")
    cls = getattr(importlib.import_module(module), attr)
    if kind == "encoder":
        assert "prefix" in keywords(cls)
        encoder = cls(IDENTITY, prefix="p")
        assert callable(encoder.encode)
        return
    config = build_config(name, cls)
    assert frozen.is_dataclass(config), "Config is a frozen record"
    if kind == "sensor":
        assert {"clock", "wall", "sysfs_root"} <= keywords(cls)
        assert isinstance(config.name, str)
        clock = FakeClock(100.0)
        sensor = cls(config, clock=clock, wall=clock, sysfs_root="/sys")
        assert isinstance(sensor, sensors_base.Sensor)
        if sensor.interval is None:
            assert isinstance(sensor, sensors_base.StreamingSensor)
        else:
            assert isinstance(sensor, sensors_base.PolledSensor)
    else:
        assert {"name", "identity"} <= keywords(cls)
        assert isinstance(config, outputs_base.OutputConfig)
        assert isinstance(config.target(), str) and config.target()
        output = cls(config, name=f"{name} test", identity=IDENTITY)
        try:
            assert isinstance(output, outputs_base.Output)
            assert output.name == f"{name} test"
        finally:
            output.close(timeout=0.1)


@pytest.mark.parametrize("name", list(registry.RECEIVERS))
def test_receiver_meets_its_protocol(name):
    """Each receiver is built from the fleet and the [collector] section alone, and says when."""
    cls = registry.receiver_class(name)
    assert {"fleet", "config"} <= keywords(cls)
    assert cls.enabled(ALL_RECEIVERS) is True
    receiver = cls(fleet=Fleet(ALL_RECEIVERS), config=ALL_RECEIVERS)  # built, never started
    try:
        assert isinstance(receiver, receivers_base.Receiver)
        assert receiver.name.lower().startswith(f"{name} ")
        assert all(type(v) is int for v in receiver.stats().values())
    finally:
        receiver.close(timeout=0.1)


def test_only_configured_receivers_are_enabled():
    """Without a [collector.mqtt] table only UDP is enabled."""
    enabled = [
        n for n in registry.RECEIVERS if registry.receiver_class(n).enabled(CollectorSection())
    ]
    assert enabled == ["udp"]


@pytest.mark.parametrize("name", list(registry.NOTIFIERS))
def test_notifier_meets_its_protocol(name):
    """Each notifier has a NotifierConfig record and sends; the TOML type is its registry name."""
    cls = registry.notifier_class(name)
    assert issubclass(cls.Config, notifiers_base.NotifierConfig)
    assert callable(cls.send)
    assert list(inspect.signature(cls).parameters) == ["config"]


def test_unknown_names_fail_with_the_valid_ones():
    """Asking the registry for a name it does not have lists the names it has."""
    with pytest.raises(FleetbeatError) as err:
        registry.output_class("ftp")
    assert (
        str(err.value) == f'unknown output type "ftp"; valid: {", ".join(sorted(KINDS["output"]))}'
    )


def samples(kinds, *more):
    """The ```toml blocks of the modules of these registries' entries, and of `more`."""
    modules = {spec.partition(":")[0] for table in kinds.values() for spec in table.values()}
    for module in sorted(modules | set(more)):
        doc = importlib.import_module(module).__doc__ or ""
        blocks = re.findall(r"```toml\n(.*?)```", doc, re.S)
        assert blocks, f"{module} documents no TOML sample"
        for i, block in enumerate(blocks):
            yield pytest.param(block, id=f"{module}#{i}")


# the [sampling] table every sensor takes is documented in agent.sampling
@pytest.mark.parametrize("sample", list(samples(KINDS, "fleetbeat.agent.sampling")))
def test_docstring_sample_is_valid(sample):
    """The sample validates as an agent config (its example file paths need not exist here)."""
    parse_agent_config(parse_toml(sample, "docstring"), "docstring", check_files=False)


@pytest.mark.parametrize("sample", list(samples({"receiver": registry.RECEIVERS})))
def test_receiver_sample_is_valid(sample):
    """A receiver module's sample validates as a collector config."""
    parse_collector_config(parse_toml(sample, "docstring"), "docstring")
