"""Serial sensor: lines from a serial port (pyserial) become readings.

A microcontroller, GPS or RS-485 adapter prints lines; each line is parsed by a
`format` (see `line_formats`), trimmed to `metrics`, converted with
`value * scale + offset`, and offered to the sensor's sampling like any reading.

Why a thread per port: pyserial's API is blocking, and its URL ports
(`socket://`, `rfc2217://`) have no file descriptor the agent's select loop could
watch. A thread parked in `read()` with a 0.2 s timeout costs no CPU while the
line is quiet, keeps opening and reopening the port (which can take seconds on a
USB adapter) off the scheduler loop, and one stuck device cannot delay another
sensor. Stopping is prompt: `stop()` wakes the read through pyserial's
`cancel_read()` (and the timeout bounds it anyway). High-rate ports need no queue:
each line goes straight through the sampler, whose `reduce` keeps O(1) state.

Faults are normal on serial and are counted by reason in the heartbeat's `err`,
never fatal: `port_absent`, `port_busy` (another process holds it; `exclusive`),
`permission_denied`, `open_failed`, `unplugged` (a read failed: the port is closed
and reopened), `partial_line` (a line cut by an unplug or by opening mid-line),
`line_too_long` (no terminator within `max_line` bytes), `bad_encoding`, and the
parsers' reasons (`bad_line`, `bad_field`, `not_numeric`, `wrong_field_count`,
`bad_json`, `bad_nmea`, `bad_checksum`, `no_match`). A port that cannot be opened
is retried after `reopen_delay`, doubling up to `reopen_max`.

Bytes become lines in `line_formats.LineAssembler`, lines become metrics by the
parsers there; `fleetbeat sensors` probes a port with `serial_probe`.

```toml
[[sensors.serial]]
name = "weather"                # the readings' src; unique among sensors
port = "/dev/ttyUSB0"           # device path, /dev/serial/by-id/..., or a pyserial URL (socket://host:port)
baudrate = 9600
bytesize = 8                    # 5, 6, 7 or 8
parity = "none"                 # "none", "even", "odd", "mark" or "space"
stopbits = 1                    # 1, 1.5 or 2
encoding = "utf-8"              # lines that do not decode are counted (bad_encoding) and skipped
format = "kv"                   # "kv", "csv", "json", "nmea" or "regex"
fields = []                     # csv: a metric name per column ("" skips a column)
delimiter = ","                 # csv: the cell separator
skip_header = false             # csv: a line without any number is a header, not an error
pattern = ""                    # regex: named groups are metrics, e.g. 'T=(?P<temp>[-\\d.]+)'
metrics = []                    # keep only these metric names; empty: keep all
scale = {}                      # per metric: value * scale + offset, e.g. { temp = 0.1 }
offset = {}                     # e.g. { temp = -40 }
max_line = 4096                 # longest line in bytes; longer ones are dropped and counted
exclusive = true                # lock the port so two programs cannot read it at once
reopen_delay = "1s"             # wait before reopening a port that failed ...
reopen_max = "30s"              # ... doubling up to this
```
"""

from __future__ import annotations

import errno
import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Optional

from fleetbeat.config.frozen import dataclass, field
from fleetbeat.config.schema import (
    Problems,
    array,
    boolean,
    duration,
    integer,
    mapping,
    number,
    option,
    string,
    text_encoding,
)
from fleetbeat.sensors.base import Emit, Row, SensorErrors
from fleetbeat.sensors.line_formats import (
    FORMATS,
    METRIC_NAME,
    LineAssembler,
    LineError,
    LineParser,
    make_parser,
)

log = logging.getLogger(__name__)

READ_TIMEOUT = 0.2  # bounds how long stop() can wait for the reader
SYNC_WINDOW = 0.05  # bytes this soon after opening are likely the tail of a line
PARITIES = {"none": "N", "even": "E", "odd": "O", "mark": "M", "space": "S"}
NAME = r"[A-Za-z0-9._-]{1,64}"


def _stopbits(value: Any, path: str, problems: Problems) -> Any:
    if isinstance(value, bool) or value not in (1, 1.5, 2):
        return problems.expected(path, "1, 1.5 or 2", value)
    return value


@dataclass(frozen=True)
class SerialConfig:
    name: str = option("serial", string(pattern=NAME, what="1-64 of A-Z a-z 0-9 . _ -"))
    port: str = option("", string(what="a device path or a pyserial URL"))
    baudrate: int = option(9600, integer(min=50, max=4_000_000))
    bytesize: int = option(8, integer(min=5, max=8))
    parity: str = option("none", string(choices=tuple(PARITIES)))
    stopbits: float = option(1, _stopbits)
    encoding: str = option("utf-8", text_encoding())
    format: str = option("kv", string(choices=FORMATS))
    fields: tuple[str, ...] = option(
        (), array(string(pattern=f"|{METRIC_NAME}", what="a metric name", allow_empty=True))
    )
    delimiter: str = option(",", string(what="a cell separator"))
    skip_header: bool = option(False, boolean())
    pattern: str = option(
        "", string(what="a regular expression with named groups", allow_empty=True)
    )
    metrics: tuple[str, ...] = option((), array(string(pattern=METRIC_NAME, what="a metric name")))
    scale: dict[str, float] = field(
        default_factory=dict, metadata={"parse": mapping(number()), "secret": False}
    )
    offset: dict[str, float] = field(
        default_factory=dict, metadata={"parse": mapping(number()), "secret": False}
    )
    max_line: int = option(4096, integer(min=16, max=1 << 20))
    exclusive: bool = option(True, boolean())
    reopen_delay: float = option(1.0, duration(min=0.01))
    reopen_max: float = option(30.0, duration(min=0.01))

    def check(self, path: str, problems: Problems) -> None:
        if not self.port:
            problems.add(f"{path}.port", 'required: a device path such as "/dev/ttyUSB0"')
        if self.format == "csv":
            if not any(self.fields):
                problems.add(f"{path}.fields", 'format "csv" needs fields, e.g. ["temp", "hum"]')
        elif self.fields:
            problems.add(f"{path}.fields", 'only used with format = "csv"')
        if self.format == "regex":
            try:
                make_parser("regex", pattern=self.pattern)
            except Exception as exc:  # re.error, or no named group
                problems.add(f"{path}.pattern", f"not a usable pattern: {exc}")
        elif self.pattern:
            problems.add(f"{path}.pattern", 'only used with format = "regex"')
        if self.metrics:
            for key in ("scale", "offset"):
                for name in getattr(self, key):
                    if name not in self.metrics:
                        problems.add(f"{path}.{key}.{name}", "not one of the kept metrics")
        if self.reopen_max < self.reopen_delay:
            problems.add(f"{path}.reopen_max", "must be at least reopen_delay")


class SerialSensor:
    """Reads lines from one serial port in its own thread and emits their readings.

    Args:
        config: one `[[sensors.serial]]` table.
        opener: builds an unopened pyserial port from keyword settings; defaults to
            `serial.serial_for_url` (tests may inject another for corners a pty
            cannot reach).
        clock: monotonic seconds; `wall` and `sysfs_root` (the sensor contract's other
            keywords) are not used by a serial port.
    """

    Config = SerialConfig

    def __init__(
        self,
        config: SerialConfig,
        *,
        opener: Optional[Callable[..., Any]] = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        sysfs_root: str = "/sys",
    ) -> None:
        self.config = config
        self.name = config.name
        self.interval: Optional[float] = None
        self.errors = SensorErrors(self.name, log)
        self.parse: LineParser = make_parser(
            config.format,
            fields=config.fields,
            delimiter=config.delimiter,
            skip_header=config.skip_header,
            pattern=config.pattern,
        )
        self.lines = 0  # complete lines read
        self.last_line: Optional[str] = None
        self.last_metrics: Optional[dict[str, float]] = None
        self.state = "not started"
        self._keep = frozenset(config.metrics) if config.metrics else None
        self._opener = opener
        self._clock = clock
        self._stopping = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._port: Any = None

    # --- lines -> readings ---------------------------------------------------------

    def parse_line(self, raw: bytes) -> Optional[dict[str, float]]:
        """Decode, parse and shape one line; problems are counted, None if nothing is left."""
        try:
            text = raw.decode(self.config.encoding)
        except UnicodeDecodeError:
            self.errors.count("bad_encoding")
            return None
        self.last_line = text
        try:
            metrics, skipped = self.parse(text)
        except LineError as exc:
            if exc.reason not in ("header", "empty_line"):
                self.errors.count(exc.reason, str(exc)[:100])
            return None
        for reason in skipped:
            self.errors.count(reason)
        if self._keep is not None:
            metrics = {k: v for k, v in metrics.items() if k in self._keep}
        cfg = self.config
        if cfg.scale or cfg.offset:
            for name, value in metrics.items():
                metrics[name] = value * cfg.scale.get(name, 1.0) + cfg.offset.get(name, 0.0)
        self.last_metrics = metrics
        return metrics or None

    # --- the port --------------------------------------------------------------------

    def open_port(self) -> Any:
        """An open port, or None after counting why it could not be opened."""
        cfg = self.config
        try:
            opener = self._opener
            if opener is None:
                import serial  # only when a serial sensor is configured

                opener = serial.serial_for_url
            port = opener(
                cfg.port,
                do_not_open=True,
                baudrate=cfg.baudrate,
                bytesize=cfg.bytesize,
                parity=PARITIES[cfg.parity],
                stopbits=cfg.stopbits,
                timeout=READ_TIMEOUT,
                exclusive=cfg.exclusive,
            )
            port.open()
        except Exception as exc:  # SerialException, OSError, ValueError from a bad URL
            reason = _open_reason(exc)
            self.state = reason.replace("port_", "")
            self.errors.count(reason, f"{cfg.port}: {exc}")
            return None
        self.state = "open"
        log.info("serial %s: %s open", self.name, cfg.port)
        return port

    def pump(self, port: Any, on_line: Callable[[bytes], bool], seconds: float) -> bool:
        """Read lines into `on_line` until it returns True, `seconds` pass, stop or a fault.

        Returns whether any byte arrived (a port that gives data resets the backoff).
        """
        lines = LineAssembler(self.config.max_line, self.errors.count)
        opened = self._clock()
        deadline = opened + seconds
        got_data = False
        while not self._stopping.is_set() and self._clock() < deadline:
            try:
                data = port.read(1)
                if data:
                    waiting = port.in_waiting
                    if waiting:
                        data += port.read(waiting)
            except Exception as exc:  # SerialException / OSError: unplugged or gone
                if not self._stopping.is_set():
                    self.state = "unplugged"
                    self.errors.count("unplugged", f"{self.config.port}: {exc}")
                    if lines.pending:
                        self.errors.count("partial_line")
                return got_data
            if not data:
                continue
            if not got_data:
                got_data = True
                if self._clock() - opened < SYNC_WINDOW:
                    lines.reset(sync=True)  # the device was likely mid-line when we opened
                    data = self._drop_fragment(data)
            for line in lines.feed(data):
                self.lines += 1
                if on_line(line):
                    return got_data
        return got_data

    def _drop_fragment(self, data: bytes) -> bytes:
        """Count the bytes before the first line end as a partial line (if any)."""
        if data[:1] not in (b"\n", b"\r"):
            self.errors.count("partial_line")
        return data

    @staticmethod
    def close_port(port: Any) -> None:
        try:
            port.close()
        except Exception as exc:  # a vanished device may fail to close; it is gone anyway
            log.debug("closing a failed port: %s", exc)

    @property
    def running(self) -> bool:
        """The reader thread is started (and not stopped)."""
        return self._thread is not None

    def report(self) -> list[Row]:
        """Port present or not, and the last line seen (`fleetbeat sensors`; see serial_probe)."""
        from fleetbeat.sensors.serial_probe import probe

        return probe(self)

    # --- streaming -------------------------------------------------------------------

    def start(self, emit: Emit) -> None:
        """Start the reader thread; it opens the port (never the caller) and keeps it open."""
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self._run, args=(emit,), name=f"serial {self.name}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop reading and close the port; returns within about READ_TIMEOUT."""
        self._stopping.set()
        port = self._port
        if port is not None:
            try:
                port.cancel_read()
            except Exception as exc:  # closed meanwhile, or a URL port without it
                log.debug("cancel_read: %s", exc)
        if self._thread is not None:
            self._thread.join(timeout=2 * READ_TIMEOUT + 0.5)
            self._thread = None

    def _run(self, emit: Emit) -> None:
        cfg = self.config
        delay = cfg.reopen_delay

        def on_line(raw: bytes) -> bool:
            metrics = self.parse_line(raw)
            if metrics:
                emit(metrics)
            return False

        while not self._stopping.is_set():
            port = None
            try:
                port = self.open_port()
                if port is not None:
                    self._port = port
                    if self.pump(port, on_line, float("inf")):
                        delay = cfg.reopen_delay
            except Exception as exc:  # a bug here must not end the thread
                self.errors.count("reader_failed", f"{type(exc).__name__}: {exc}")
                log.exception("serial %s: reader failed", self.name)
            finally:
                self._port = None
                if port is not None:
                    self.close_port(port)
            if self._stopping.wait(delay):
                break
            delay = min(delay * 2, cfg.reopen_max)
        self.state = "stopped"


def _open_reason(exc: BaseException) -> str:
    code = getattr(exc, "errno", None)
    if code is None and isinstance(exc.__context__, OSError):
        code = exc.__context__.errno
    if code in (errno.ENOENT, errno.ENODEV, errno.ENXIO):
        return "port_absent"
    if code in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EBUSY):
        return "port_busy"
    if code in (errno.EACCES, errno.EPERM):
        return "permission_denied"
    return "open_failed"


if TYPE_CHECKING:  # mypy checks the class against the sensor contract
    from fleetbeat.sensors.base import SensorClass

    _: SensorClass = SerialSensor
