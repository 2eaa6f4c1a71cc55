"""The agent as a whole: jitter, heartbeats never sampled, errors in the heartbeat, restarts."""

from __future__ import annotations

import signal

from fleetbeat.agent.config import parse_agent_config
from fleetbeat.agent.runtime import Agent
from fleetbeat.config.loader import parse_toml
from helpers import UdpReceiver, agent_toml, run_cli


def make_agent(port: int, extra: str = "", **kw) -> Agent:
    cfg = parse_agent_config(parse_toml(agent_toml(port) + extra), "test.toml")
    return Agent(cfg, **kw)


def test_schedule_starts_at_a_random_offset_within_jitter():
    """Every job's first tick is offset by rng() * jitter from the start."""
    text = '[agent]\njitter = "8s"\n[[outputs.udp]]\nport = 9\n'
    cfg = parse_agent_config(parse_toml(text), "t.toml")
    now = [500.0]
    agent = Agent(cfg, rng=lambda: 0.25, clock=lambda: now[0])
    sched = agent.start()
    assert {j.due for j in sched.jobs} == {502.0}
    for em in agent.emitters:
        em.output.close()


def test_heartbeats_are_never_sampled(start_agent):
    """With rate = 0.3 on the system sensor, readings thin out but every heartbeat is sent."""
    rx = UdpReceiver()
    try:
        system = 'interval = "0.05s"\n[sensors.system.sampling]\nrate = 0.3'
        start_agent(agent_toml(rx.port, interval="0.05s", system=system))
        msgs = rx.wait_for(lambda ms: sum(m["k"] == "hb" for m in ms) >= 40, timeout=10)
        hbs = [m for m in msgs if m["k"] == "hb"]
        rds = [m for m in msgs if m["k"] == "rd"]
        assert [m["seq"] for m in hbs] == list(range(len(hbs)))
        assert 1 <= len(rds) < 0.7 * len(hbs)  # one read per heartbeat, ~30% kept
        assert all(m["rate"] == 0.3 for m in rds)
        assert [m["seq"] for m in rds] == list(range(len(rds)))  # seq counts sent messages only
    finally:
        rx.close()


def test_heartbeat_reports_sensor_errors_and_drops():
    """A heartbeat carries the sensors' error counts (`err`) and the output's drops (`drop_by`)."""
    rx = UdpReceiver()
    try:
        agent = make_agent(rx.port)
        agent.start()
        agent.system.errors.count("mem", "PermissionError")
        agent.emitters[0].output.tally.drop("refused")
        agent.send_heartbeat()
        [hb] = [m for m in rx.wait_for(lambda ms: len(ms) >= 1) if m["k"] == "hb"]
        assert hb["err"] == {"system": {"mem": 1}}
        assert hb["drop"] == 1 and hb["drop_by"] == {"refused": 1}
        agent.shutdown()
    finally:
        rx.close()


def test_a_restart_gets_a_new_run_and_seq_from_zero(start_agent):
    """Each agent start has a new random run id, and its streams count again from 0."""
    rx = UdpReceiver()
    try:
        first = start_agent(agent_toml(rx.port))
        rx.wait_for(lambda ms: sum(m["k"] == "hb" for m in ms) >= 2)
        first.signal(signal.SIGTERM)
        assert first.wait() == 0
        second = start_agent(agent_toml(rx.port))
        msgs = rx.wait_for(lambda ms: len({m["run"] for m in ms}) == 2 and ms[-1]["k"] == "hb")
        second.stop()
        runs = list(dict.fromkeys(m["run"] for m in msgs))
        for run in runs:
            hbs = [m["seq"] for m in msgs if m["run"] == run and m["k"] in ("hb", "bye")]
            assert hbs[0] == 0 and hbs == list(range(len(hbs)))
        assert all(len(r) == 16 and int(r, 16) >= 0 for r in runs)
    finally:
        rx.close()


def test_sigint_also_sends_bye(start_agent, udp_receiver):
    """Ctrl-C (SIGINT) stops the agent like SIGTERM: a bye, exit status 0."""
    agent = start_agent(agent_toml(udp_receiver.port))
    udp_receiver.wait_for(lambda ms: any(m["k"] == "hb" for m in ms))
    agent.signal(signal.SIGINT)
    assert agent.wait(2) == 0
    udp_receiver.wait_for(lambda ms: ms[-1]["k"] == "bye")


def test_every_command_has_help():
    """`--help` works on the program and on each command."""
    for args in ([], ["agent"], ["check-config"], ["sensors"]):
        result = run_cli(*args, "--help")
        assert result.returncode == 0 and "usage: fleetbeat" in result.stdout, args


def test_sensors_command_shows_what_the_device_can_report(tmp_path):
    """`fleetbeat sensors` prints each metric with its value, and what is unavailable and why."""
    sysfs = tmp_path / "sys"
    sysfs.mkdir()
    result = run_cli("sensors", "--settle", "0.2", "--sysfs-root", str(sysfs))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("== system")
    lines = {line.split()[0]: line for line in result.stdout.splitlines()[1:] if line.strip()}
    assert "% busy" in lines["cpu"] and "% used" in lines["disk.root"]
    assert "not available: no Raspberry Pi firmware throttling flags" in lines["throttle"]


def test_a_sensor_cannot_grow_state_without_bound():
    """Past MAX_METRICS_PER_SENSOR distinct names, new names are dropped and counted."""
    from fleetbeat.agent.runtime import MAX_METRICS_PER_SENSOR

    rx = UdpReceiver()
    try:
        agent = make_agent(rx.port, "\n[sensors.system.sampling]\ndeadband = 1\n")
        channel = agent.channels["system"]
        for i in range(MAX_METRICS_PER_SENSOR + 500):
            channel.offer({f"m{i}": 1.0, "m0": float(i)})
        assert len(channel.sampler._sent) == MAX_METRICS_PER_SENSOR
        assert agent.system.errors.by_reason == {"too_many_metrics": 500}
        agent.shutdown()
    finally:
        rx.close()
