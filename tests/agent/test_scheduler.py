"""The scheduler: fixed intervals on a monotonic clock, missed ticks skipped, never a burst."""

from __future__ import annotations

from fleetbeat.agent.scheduler import Scheduler
from helpers import FakeClock


def test_jobs_run_at_their_interval():
    """A job runs when due and reports the next deadline."""
    clock = FakeClock(100.0)
    sched = Scheduler(clock)
    runs = []
    sched.add("a", 10.0, lambda: runs.append(clock.now), first=105.0)
    assert sched.run_due() == 105.0 and runs == []
    clock.now = 105.0
    assert sched.run_due() == 115.0
    clock.now = 115.0
    sched.run_due()
    assert runs == [105.0, 115.0]


def test_missed_ticks_are_skipped_not_caught_up():
    """After a 35 s stall a 10 s job runs once, then resumes on its grid."""
    clock = FakeClock(100.0)
    sched = Scheduler(clock)
    runs = []
    job = sched.add("a", 10.0, lambda: runs.append(clock.now), first=100.0)
    sched.run_due()
    clock.now = 135.0  # 110, 120, 130 were missed
    assert sched.run_due() == 140.0
    assert runs == [100.0, 135.0]
    assert job.skipped == 2


def test_slow_job_skips_the_ticks_it_overran():
    """A job that itself takes longer than its interval does not run back to back."""
    clock = FakeClock(100.0)
    sched = Scheduler(clock)

    def slow() -> None:
        clock.now += 25.0

    job = sched.add("slow", 10.0, slow, first=100.0)
    assert sched.run_due() == 130.0
    assert job.runs == 1 and job.skipped == 2


def test_a_failing_job_does_not_stop_the_others():
    """An exception in one job is logged; the other jobs still run."""
    clock = FakeClock(100.0)
    sched = Scheduler(clock)
    ran = []

    def boom() -> None:
        raise RuntimeError("boom")

    sched.add("boom", 1.0, boom, first=100.0)
    sched.add("ok", 1.0, lambda: ran.append(1), first=100.0)
    sched.run_due()
    assert ran == [1]
