"""The expected_devices file: the ids a fleet should have, read whole (`collector.lifecycle`
holds them).

`expected_devices` names a file, one device id a line with
optional tags after it, `#` comments and blank lines allowed:

    # the barn
    pi-barn-01 site=barn room=loft
    pi-barn-02 site=barn

`#` starts a comment anywhere on a line. Ids follow the wire's rule (`wire.DEVICE_ID`);
a tag is KEY=VALUE (the first `=` splits; no spaces, no `#`, no control characters;
keys and values at most 128 characters, as on the wire), at most `max_tags` of them in
`max_tag_bytes` a line, at most `max_devices` lines with an id, `MAX_FILE_BYTES` in
all, each id once, a regular file. A bad file at start is a config error naming the
file, each bad line's number and what is wrong (`ExpectedError`); on SIGHUP it is
logged and the list read before stays, as for a file that keeps none of the ids of a
non-empty list (`Lifecycle.expect`). The SIGHUP read runs in a thread of its own
(`Rereader`), off the main loop; blank and comment lines cost next to nothing (8 million
of them, 16 MiB: about a second).
"""

from __future__ import annotations

import logging
import os
import re
import stat
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Optional, Protocol

from fleetbeat.collector.budget import tags_cost
from fleetbeat.errors import FleetbeatError
from fleetbeat.wire import DEVICE_ID, MAX_TEXT

if TYPE_CHECKING:
    from fleetbeat.collector.config import CollectorSection

MAX_FILE_BYTES = 32 << 20  # the expected_devices file, read whole at start and on SIGHUP
MAX_LINE_CHARS = 64 << 10  # one line: an id and its tags fit in far less
MAX_PROBLEMS = 20  # bad lines named in one error; the count says how many more
log = logging.getLogger(__name__)

_CONTROL = re.compile("[\x00-\x08\x0a-\x0c\x0e-\x1f\x7f-\x9f]")  # Cc, but tab and CR
Expected = dict[str, Mapping[str, str]]  # id -> the file's tags for it, in file order


class ExpectedError(FleetbeatError):
    """The expected_devices file cannot be used; `problems` names each bad line."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


def load_expected(section: CollectorSection) -> Expected:
    """The `expected_devices` file of `section` ({} when the key is ""); ExpectedError."""
    if not section.expected_devices:
        return {}
    return read_expected(section.expected_devices, max_devices=section.max_devices,
                         max_tags=section.max_tags,
                         max_tag_bytes=section.max_tag_bytes)  # fmt: skip


def read_expected(path: str, *, max_devices: int, max_tags: int, max_tag_bytes: int) -> Expected:
    """Every id of the file at `path` with its tags; ExpectedError naming what is wrong."""
    try:  # non-blocking open: a FIFO put there would otherwise hang the start or reload
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise ExpectedError([f"{path}: not a regular file"])
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ExpectedError([f"{path}: {exc.strerror or exc}"]) from None
    if len(data) > MAX_FILE_BYTES:
        raise ExpectedError([f"{path}: larger than {MAX_FILE_BYTES >> 20} MiB"])
    if data.startswith(b"\xef\xbb\xbf"):  # a byte-order mark some editors write
        data = data[3:]
    try:  # one decode for the whole file; a bad byte: line by line, to say where
        lines: Any = data.decode("utf-8").split("\n")
    except UnicodeDecodeError:
        lines = data.split(b"\n")
    found: dict[str, Mapping[str, str]] = {}
    at: dict[str, int] = {}
    shared: dict[tuple[tuple[str, str], ...], Mapping[str, str]] = {}  # a fleet has few tag sets
    problems: list[str] = []
    bad = 0
    for n, raw in enumerate(lines, 1):
        if (not raw or raw[0] == "#") and len(raw) <= MAX_LINE_CHARS:  # blank, a comment
            continue
        try:
            dev, tags = _line(raw)
            if dev in at:
                raise ValueError(f"{dev} is already on line {at[dev]}")
            key = tuple(tags.items())
            if dev and key not in shared:  # a tag set is checked once, however many use it
                _check_tags(tags, max_tags, max_tag_bytes)
                shared[key] = tags
        except ValueError as err:
            bad += 1
            if len(problems) < MAX_PROBLEMS:
                problems.append(f"{path} line {n}: {err}")
            continue
        if not dev:
            continue
        if len(found) >= max_devices:
            bad += 1
            problems.append(f"{path} line {n}: more than max_devices ({max_devices}) devices")
            break
        found[dev] = shared[key]
        at[dev] = n
    if bad:
        if bad > len(problems):
            problems.append(f"{path}: {bad - len(problems)} more bad lines")
        raise ExpectedError(problems)
    return found


def _line(raw: Any) -> tuple[str, dict[str, str]]:
    """(id, tags) of one line (str, or bytes when the file is not all UTF-8), ("", {}) for
    a blank or comment one; ValueError saying what is wrong."""
    if len(raw) > MAX_LINE_CHARS:
        raise ValueError(f"longer than {MAX_LINE_CHARS} characters")
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError("not UTF-8 text") from None
    text = raw.split("#", 1)[0]
    if _CONTROL.search(text):
        raise ValueError("a control character")
    words = text.split()
    if not words:
        return "", {}
    dev, *pairs = words
    if not DEVICE_ID.fullmatch(dev):
        raise ValueError(f"{_show(dev)} is not a device id (1 to 64 of A-Z a-z 0-9 . _ -)")
    tags: dict[str, str] = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key:
            raise ValueError(f"tag {_show(pair)}: expected KEY=VALUE")
        if len(key) > MAX_TEXT or len(value) > MAX_TEXT:
            raise ValueError(f"tag {_show(pair)}: keys and values are at most {MAX_TEXT} "
                             "characters")  # fmt: skip
        if key in tags:
            raise ValueError(f"tag {_show(key)} twice")
        tags[key] = value
    return dev, tags


def _check_tags(tags: dict[str, str], max_tags: int, max_tag_bytes: int) -> None:
    """The collector's bounds on one device's tags (as a heartbeat's: `budget`)."""
    if len(tags) > max_tags:
        raise ValueError(f"{len(tags)} tags, more than max_tags ({max_tags})")
    if tags and tags_cost(tags) > max_tag_bytes:
        raise ValueError(f"the tags take {tags_cost(tags)} bytes, more than max_tag_bytes "
                         f"({max_tag_bytes})")  # fmt: skip


def _show(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:40] + "...")


class Expects(Protocol):
    """What the re-reading needs of the fleet (`collector.fleet.Fleet` has it)."""

    def expect(self, expected: Expected, path: str = "") -> tuple[int, int]: ...


class Rereader:
    """Re-reads the expected_devices file on SIGHUP in a thread of its own (`soon`): a big
    file (MAX_FILE_BYTES may take seconds to parse) must not hold up the main loop's
    checks, flushes and watchdog pings. One read at a time; a SIGHUP during one reads the
    file again after it. A bad file is logged, and the list read before stays."""

    def __init__(self, fleet: Expects) -> None:
        self._fleet = fleet
        self._lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None
        self._next: Optional[tuple[CollectorSection, str]] = None

    def soon(self, c: CollectorSection, before: str) -> None:
        """Read `c.expected_devices` (`before`: the path read last) in the background."""
        with self._lock:
            self._next = (c, before)
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="expected-devices",
                                                daemon=True)  # fmt: skip
                self._thread.start()

    def wait(self, timeout: Optional[float] = None) -> None:
        """Until the reads asked for are done (tests)."""
        with self._lock:
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _work(self) -> None:
        while True:
            with self._lock:
                job, self._next = self._next, None
                if job is None:
                    self._thread = None
                    return
            try:
                self.now(*job)
            except Exception:  # a bug here must not stop later reloads
                log.exception("reload: expected_devices failed; keeping the list read before")

    def now(self, c: CollectorSection, before: str) -> None:
        """Re-read the file at once, in this thread; a bad one is logged, the old list stays."""
        try:
            expected = load_expected(c)
            added, removed = self._fleet.expect(expected, c.expected_devices)
        except ExpectedError as err:
            log.error("reload: expected_devices: %s; keeping the expected devices read before",
                      err)  # fmt: skip
            return
        if added or removed or c.expected_devices != before:
            log.info("reload: expected devices: %d in %s (+%d, -%d)", len(expected),
                     c.expected_devices or '""', added, removed)  # fmt: skip
