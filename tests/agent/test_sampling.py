"""Producer-side sampling: rate, deadband with max_silence, reduce windows."""

from __future__ import annotations

import math
import random

import pytest

from fleetbeat.agent.sampling import Sampler, SamplingConfig
from helpers import FakeClock


def sampler(clock=None, seed=1, **kw) -> Sampler:
    return Sampler(
        SamplingConfig(**kw), clock=clock or FakeClock(1000.0), rng=random.Random(seed).random
    )


def test_identity_sampling_keeps_everything():
    """With no sampling options every reading goes out unchanged."""
    s = sampler()
    for i in range(100):
        assert s.offer({"x": float(i)}) == {"x": float(i)}


@pytest.mark.parametrize("rate", [0.01, 0.1, 0.5, 0.9])
def test_rate_keeps_a_binomial_share(rate):
    """`rate` keeps each reading with that probability: the count lies in 5-sigma binomial bounds."""
    n = 20_000
    s = sampler(rate=rate, seed=42)
    kept = sum(s.offer({"x": 1.0}) is not None for _ in range(n))
    sigma = math.sqrt(n * rate * (1 - rate))
    assert abs(kept - n * rate) < 5 * sigma, (kept, n * rate, sigma)


def test_rate_is_per_reading_not_per_metric():
    """A kept reading keeps all of its metrics together."""
    s = sampler(rate=0.5, seed=3)
    outs = [s.offer({"a": 1.0, "b": 2.0}) for _ in range(200)]
    assert all(o is None or o == {"a": 1.0, "b": 2.0} for o in outs)
    assert any(o is None for o in outs) and any(o is not None for o in outs)


def test_deadband_sends_only_when_moved_since_last_sent():
    """An absolute deadband compares with the last value *sent*, not the last one seen."""
    s = sampler(deadband=0.5)
    assert s.offer({"t": 20.0}) == {"t": 20.0}
    assert s.offer({"t": 20.3}) is None
    assert s.offer({"t": 20.4}) is None  # 0.4 from the last sent (20.0), though 0.1 from 20.3
    assert s.offer({"t": 20.5}) == {"t": 20.5}  # moved exactly the deadband
    assert s.offer({"t": 20.0}) == {"t": 20.0}
    assert s.offer({"t": 19.6}) is None


def test_deadband_is_per_metric():
    """Each metric has its own last-sent value; only the metrics that moved go out."""
    s = sampler(deadband=1.0)
    assert s.offer({"a": 0.0, "b": 0.0}) == {"a": 0.0, "b": 0.0}
    assert s.offer({"a": 5.0, "b": 0.5}) == {"a": 5.0}
    assert s.offer({"a": 5.0, "b": 1.0}) == {"b": 1.0}
    assert s.offer({"a": 5.5, "b": 1.2}) is None


def test_deadband_pct_is_relative_to_last_sent():
    """deadband_pct = 2 needs a 2% move relative to the last value sent."""
    s = sampler(deadband_pct=2)
    assert s.offer({"p": 1000.0}) == {"p": 1000.0}
    assert s.offer({"p": 1019.0}) is None
    assert s.offer({"p": 1020.0}) == {"p": 1020.0}
    assert s.offer({"p": 1040.0}) is None  # 2% of 1020 is 20.4
    assert s.offer({"p": 999.5}) == {"p": 999.5}


def test_max_silence_sends_a_quiet_metric_anyway():
    """A metric that does not move is still sent once max_silence has passed since it was sent."""
    clock = FakeClock(1000.0)
    s = sampler(clock, deadband=1.0, max_silence=300.0)
    assert s.offer({"t": 20.0}) == {"t": 20.0}
    clock.now += 299
    assert s.offer({"t": 20.0}) is None
    clock.now += 1
    assert s.offer({"t": 20.0}) == {"t": 20.0}
    clock.now += 100
    assert s.offer({"t": 20.1}) is None  # the silence clock restarted at the last send
    clock.now += 200
    assert s.offer({"t": 20.1}) == {"t": 20.1}


@pytest.mark.parametrize(
    ("how", "expected"), [("mean", 2.5), ("min", 1.0), ("max", 4.0), ("last", 4.0)]
)
def test_reduce_gives_one_value_per_window(how, expected):
    """reduce + every emits one value per metric per window, when the window has ended."""
    clock = FakeClock(1000.0)
    s = sampler(clock, reduce=how, every=10.0)
    for i, v in enumerate([1.0, 2.0, 3.0, 4.0]):
        clock.now += 2 if i else 0
        assert s.offer({"x": v}) is None
    clock.now += 4  # 10 s after the first value
    assert s.flush() == {"x": expected}
    assert s.flush() is None  # the window is empty now


def test_reduce_window_closes_on_the_next_offer():
    """A reading arriving after the window ended closes it (and starts the next window)."""
    clock = FakeClock(1000.0)
    s = sampler(clock, reduce="max", every=1.0)
    assert s.offer({"x": 5.0}) is None
    clock.now += 1.5
    assert s.offer({"x": 1.0}) == {"x": 5.0}
    clock.now += 0.5
    assert s.flush() is None  # the new window started at the late reading
    clock.now += 0.5
    assert s.flush() == {"x": 1.0}


def test_reduce_state_is_constant_per_metric():
    """A fast stream through reduce keeps O(1) state per metric, never a list of values."""
    clock = FakeClock(1000.0)
    s = sampler(clock, reduce="mean", every=3600.0)
    for i in range(100_000):
        s.offer({"x": float(i % 7), "y": 1.0})
    assert len(s._window) == 2
    assert all(isinstance(w.value, float) for w in s._window.values())
    clock.now += 3600
    out = s.flush()
    assert out is not None and math.isclose(out["x"], 3.0, rel_tol=1e-3) and out["y"] == 1.0


def test_reduce_then_deadband():
    """Reduced values still go through the deadband."""
    clock = FakeClock(1000.0)
    s = sampler(clock, reduce="mean", every=1.0, deadband=1.0)
    s.offer({"x": 10.0})
    clock.now += 1
    assert s.flush() == {"x": 10.0}
    s.offer({"x": 10.4})
    clock.now += 1
    assert s.flush() is None
