"""Producer-side sampling: decide, per sensor, which readings are sent.

Three independent thinning steps, applied in this order to each reading:

1. `reduce` with `every`: one value per window per metric (mean, min, max or last),
   O(1) state per metric, never a queue of values;
2. `deadband` / `deadband_pct`: a metric goes out only when it moved that much since
   the last value *sent*; `max_silence` sends it anyway after that long;
3. `rate`: the whole reading is kept with that probability, and carries the rate so
   receivers can scale counts.

Heartbeats never pass through here.

```toml
[sensors.system.sampling]
rate = 1.0            # keep each reading with this probability (0 < rate <= 1)
deadband = 0.5        # absolute change needed to send a metric again
# deadband_pct = 2    # ... or relative change, in percent of the last sent value (not both)
max_silence = "5m"    # send a metric after this long even if it did not move
reduce = "mean"       # "mean", "min", "max" or "last" over each window ...
every = "10s"         # ... of this length
```
"""

from __future__ import annotations

from typing import Callable, Optional

from fleetbeat.config.frozen import dataclass
from fleetbeat.config.schema import Problems, duration, number, option, string

REDUCERS = ("mean", "min", "max", "last")


@dataclass(frozen=True)
class SamplingConfig:
    rate: float = option(1.0, number(above=0.0, max=1.0))
    deadband: Optional[float] = option(None, number(min=0.0))
    deadband_pct: Optional[float] = option(None, number(min=0.0))
    max_silence: Optional[float] = option(None, duration())
    reduce: Optional[str] = option(None, string(choices=REDUCERS))
    every: Optional[float] = option(None, duration())

    def check(self, path: str, problems: Problems) -> None:
        if self.deadband is not None and self.deadband_pct is not None:
            problems.add(f"{path}.deadband_pct", "set deadband or deadband_pct, not both")
        if (self.reduce is None) != (self.every is None):
            missing = "every" if self.every is None else "reduce"
            problems.add(f"{path}.{missing}", "reduce and every go together: set both or neither")
        if self.max_silence is not None and self.deadband is None and self.deadband_pct is None:
            problems.add(f"{path}.max_silence", "max_silence needs deadband or deadband_pct")


def _never() -> float:
    raise AssertionError("no draws without a rate")


class _Window:
    """Running aggregate of one metric over one window."""

    __slots__ = ("count", "value")

    def __init__(self, value: float) -> None:
        self.value = value
        self.count = 1


class Sampler:
    """Applies one sensor's `SamplingConfig`; not thread-safe (callers hold a lock).

    Args:
        config: the sensor's sampling table.
        clock: monotonic seconds; injectable for tests.
        rng: uniform draws in [0, 1) for `rate`; default `random.random`; seeded in tests.
    """

    def __init__(
        self,
        config: SamplingConfig,
        *,
        clock: Callable[[], float],
        rng: Optional[Callable[[], float]] = None,
    ) -> None:
        self.config = config
        self._clock = clock
        if rng is None and config.rate < 1.0:
            import random  # only when a rate is set: 0.2 MB a Pi Zero need not pay

            rng = random.random
        self._rng = rng or _never
        self._window: dict[str, _Window] = {}
        self._window_end: float | None = None
        self._sent: dict[str, tuple[float, float]] = {}  # metric -> (value, when)

    def offer(self, metrics: dict[str, float]) -> dict[str, float] | None:
        """Take one reading; return what to send now, or None."""
        if self.config.reduce is not None:
            closed = self.flush()  # a reading after the window's end belongs to the next one
            self._accumulate(metrics)
            return closed
        return self._thin(metrics)

    def flush(self) -> dict[str, float] | None:
        """Close the reduce window if it has ended; return what to send, or None."""
        if self.config.reduce is None or self._window_end is None:
            return None
        if self._clock() < self._window_end:
            return None
        reduced = {name: w.value for name, w in self._window.items()}
        self._window.clear()
        self._window_end = None
        return self._thin(reduced) if reduced else None

    def _accumulate(self, metrics: dict[str, float]) -> None:
        if self._window_end is None:
            self._window_end = self._clock() + (self.config.every or 0.0)
        how = self.config.reduce
        for name, value in metrics.items():
            w = self._window.get(name)
            if w is None:
                self._window[name] = _Window(value)
            elif how == "mean":
                w.count += 1
                w.value += (value - w.value) / w.count  # running mean: no sum overflow
            elif how == "min":
                w.value = min(w.value, value)
            elif how == "max":
                w.value = max(w.value, value)
            else:
                w.value = value

    def _thin(self, metrics: dict[str, float]) -> dict[str, float] | None:
        cfg = self.config
        if cfg.deadband is not None or cfg.deadband_pct is not None:
            metrics = self._deadband(metrics)
            if not metrics:
                return None
        if cfg.rate < 1.0 and self._rng() >= cfg.rate:
            return None
        if cfg.deadband is not None or cfg.deadband_pct is not None:
            now = self._clock()
            for name, value in metrics.items():
                self._sent[name] = (value, now)
        return metrics

    def _deadband(self, metrics: dict[str, float]) -> dict[str, float]:
        cfg = self.config
        now = self._clock()
        out = {}
        for name, value in metrics.items():
            last = self._sent.get(name)
            if last is None:
                out[name] = value
                continue
            last_value, when = last
            if cfg.max_silence is not None and now - when >= cfg.max_silence:
                out[name] = value
                continue
            moved = abs(value - last_value)
            if cfg.deadband is not None:
                threshold = cfg.deadband
            else:
                threshold = abs(last_value) * (cfg.deadband_pct or 0.0) / 100.0
            if moved > threshold or (moved == threshold and threshold > 0):
                out[name] = value
        return out
