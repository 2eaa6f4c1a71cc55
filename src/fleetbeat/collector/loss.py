"""Loss of one seq stream, RFC 3550's way with 64-bit seqs; the loss-aware down_after.

Within one run, expected = highest - first + 1, lost = expected - distinct received;
a late arrival lowers `lost`, a duplicate does not count twice (a 128-seq window
tells them apart; an arrival older than that is counted as reordered).
"""

from __future__ import annotations

import math

MAX_PLAIN_JUMP = 1000  # seq jumps beyond this (and beyond the time elapsed) are suspect
SEQ_WINDOW = 128  # seqs behind the highest in which a duplicate is told from a late arrival
_WINDOW_MASK = (1 << SEQ_WINDOW) - 1
RECENT_BUCKET = 128  # expected heartbeats per recent-loss bucket (two buckets kept)
FALSE_DOWN_ODDS = 1e-6  # how rarely an alive device may be called down, per interval
MIN_DOWN_AFTER = 3


def auto_down_after(lost: int, expected: int, cap: float) -> int:
    """Smallest k >= 3 with p^k < 1e-6, p the smoothed loss rate, at most `cap`."""
    # Laplace smoothing: a device we know little about gets the benefit of the doubt.
    p = (lost + 1) / (expected + 2)
    if p <= 0.0:
        return MIN_DOWN_AFTER
    k = MIN_DOWN_AFTER if p >= 1.0 else math.floor(math.log(FALSE_DOWN_ODDS) / math.log(p)) + 1
    return int(max(MIN_DOWN_AFTER, min(k, cap)))


class SeqTracker:
    """Loss, duplicates and reordering of one seq stream within one run."""

    __slots__ = (
        "duplicates", "expected", "highest", "probe", "received", "reordered", "resync", "seen",
    )  # fmt: skip

    def __init__(self, seq: int) -> None:
        self.highest = seq
        self.seen = 1  # bit i: highest - i was received
        self.received = 1
        self.expected = 1
        self.duplicates = 0
        self.reordered = 0
        self.resync = False
        self.probe = -1  # a seq rejected as an absurd jump; its successor confirms the jump

    def plausible(self, seq: int, elapsed_intervals: float) -> bool:
        """False for an absurd jump (RFC 3550's MAX_DROPOUT idea), unless it is confirmed.

        Forward jumps up to 1000 seqs or twice the intervals elapsed are plausible;
        anything else, and a jump back beyond the duplicate window, is rejected until
        the next seq follows it: then the sender really jumped and counting resyncs.
        """
        jump = seq - self.highest
        if jump > 0:
            if jump <= MAX_PLAIN_JUMP + 2 * elapsed_intervals:
                return True
        elif jump > -SEQ_WINDOW:
            return True
        if self.probe >= 0 and seq == self.probe + 1:
            self.highest = seq - 1
            self.seen = 0
            self.resync = True
            self.probe = -1
            return True
        self.probe = seq
        return False

    def add(self, seq: int) -> int:
        """Count one arrival; return the number of newly expected seqs (0 for old ones).

        -1 means a duplicate.
        """
        gap = seq - self.highest
        if gap > 0:
            if self.resync:  # first arrival after a collector restart: the gap is not network loss
                self.resync = False
                gap = 1
                self.seen = 1
            else:
                self.seen = ((self.seen << gap) | 1) & _WINDOW_MASK if gap < SEQ_WINDOW else 1
            self.highest = seq
            self.expected += gap
            self.received += 1
            return gap
        off = -gap
        if off < SEQ_WINDOW:
            bit = 1 << off
            if self.seen & bit:
                self.duplicates += 1
                return -1
            self.seen |= bit
        self.received += 1
        self.reordered += 1
        return 0

    @property
    def lost(self) -> int:
        return max(0, self.expected - self.received)

    def figures(self) -> tuple[int, int, int, int]:
        return self.received, self.expected, self.duplicates, self.reordered


class RecentLoss:
    """Loss over the last few hundred expected heartbeats: two buckets, the older dropped whole.

    A base class of `Device`, not a member: its four slots live in the device record,
    so 100,000 devices cost no extra object each. The figures are small ints, cached by
    CPython: four slots cost less than one list.
    """

    __slots__ = ("cur_exp", "cur_lost", "recent_exp", "recent_lost")

    def __init__(self) -> None:
        # lost and expected in the current bucket, and in both buckets together
        self.cur_lost = 0
        self.cur_exp = 0
        self.recent_lost = 0
        self.recent_exp = 0

    def count_loss(self, gap: int) -> None:
        """Count a heartbeat `gap` seqs past the highest (`SeqTracker.add`); 0: a late one."""
        if gap > 0:
            self.cur_exp += gap
            self.recent_exp += gap
            if gap > 1:
                self.cur_lost += gap - 1
                self.recent_lost += gap - 1
            if self.cur_exp >= RECENT_BUCKET:  # the older bucket goes; the current one stays
                self.recent_exp = self.cur_exp
                self.recent_lost = self.cur_lost
                self.cur_exp = self.cur_lost = 0
        elif self.recent_lost > 0:  # a late arrival: one fewer lost
            self.recent_lost -= 1
            if self.cur_lost > 0:
                self.cur_lost -= 1
