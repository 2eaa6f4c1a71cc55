"""AMQP 0-9-1 frames for the AMQP output and the collector's consumer: pure functions.

Written by hand rather than with pamqp: the publish path needs hand-built bytes
anyway (a cached Basic.Publish frame per routing key, then one struct.pack for the
content header: pamqp builds and marshals three objects a message), the rest is
the dozen methods a publisher and a no-ack consumer use, and the agent saves
pamqp's 2.1 MiB of RSS and its 3.3 / 4.x API split between Python 3.9 and 3.11.
AMQP 0-9-1 specification, sections 2.3.5 (frames), 4.2.3 (field types), 4.2.6
(content header); method numbers from its XML (class, method).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any, NamedTuple, Optional

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
METHOD, HEADER, BODY, HEARTBEAT = 1, 2, 3, 8
FRAME_END = 0xCE
HEARTBEAT_FRAME = b"\x08\x00\x00\x00\x00\x00\x00\xce"
MIN_FRAME_MAX = 4096  # every peer must accept frames this large
FRAME_OVERHEAD = 8  # type, channel, size, frame-end

START, START_OK, TUNE, TUNE_OK = (10, 10), (10, 11), (10, 30), (10, 31)
OPEN, OPEN_OK, CLOSE, CLOSE_OK = (10, 40), (10, 41), (10, 50), (10, 51)
BLOCKED, UNBLOCKED = (10, 60), (10, 61)
CHANNEL_OPEN, CHANNEL_OPEN_OK = (20, 10), (20, 11)
CHANNEL_CLOSE, CHANNEL_CLOSE_OK = (20, 40), (20, 41)
EXCHANGE_DECLARE, EXCHANGE_DECLARE_OK = (40, 10), (40, 11)
EXCHANGE_BIND, EXCHANGE_BIND_OK = (40, 30), (40, 31)
QUEUE_DECLARE, QUEUE_DECLARE_OK, QUEUE_BIND, QUEUE_BIND_OK = (50, 10), (50, 11), (50, 20), (50, 21)
CONSUME, CONSUME_OK, CANCEL, PUBLISH, DELIVER = (60, 20), (60, 21), (60, 30), (60, 40), (60, 60)

_HEAD = struct.Struct(">BHI")  # frame type, channel, payload size
_CONTENT = struct.Struct(">BHIHHQ")  # header frame head + class, weight, body size
_BODY_HEAD = struct.Struct(">BHI")
_END = bytes((FRAME_END,))


class FrameError(ValueError):
    """Bytes that are not AMQP 0-9-1 frames: the connection must be closed."""


class Frame(NamedTuple):
    kind: int
    channel: int
    payload: bytes


# --- field types -------------------------------------------------------------------------


def shortstr(text: str) -> bytes:
    raw = text.encode()
    if len(raw) > 255:
        raise ValueError(f"short string of {len(raw)} bytes (at most 255)")
    return bytes((len(raw),)) + raw


def longstr(raw: bytes) -> bytes:
    return struct.pack(">I", len(raw)) + raw


def _value(v: Any) -> bytes:
    if isinstance(v, bool):
        return b"t" + (b"\x01" if v else b"\x00")
    if isinstance(v, int):  # RabbitMQ reads both; 'I' where it fits, as pika writes them
        return b"I" + struct.pack(">i", v) if -(2**31) <= v < 2**31 else b"l" + struct.pack(">q", v)
    if isinstance(v, str):
        return b"S" + longstr(v.encode())
    if isinstance(v, Mapping):
        return b"F" + table(v)
    raise TypeError(f"no AMQP field type for {type(v).__name__}")


def table(fields: Optional[Mapping[str, Any]]) -> bytes:
    """A field table: bool, int, str and nested tables (all fleetbeat sends)."""
    body = b"".join(shortstr(k) + _value(v) for k, v in (fields or {}).items())
    return longstr(body)


# --- frames we send --------------------------------------------------------------------------


def frame(kind: int, channel: int, payload: bytes) -> bytes:
    return _HEAD.pack(kind, channel, len(payload)) + payload + _END


def method(channel: int, ids: tuple[int, int], args: bytes = b"") -> bytes:
    """A whole method frame."""
    return frame(METHOD, channel, struct.pack(">HH", *ids) + args)


def start_ok(properties: Mapping[str, Any], user: str, password: str) -> bytes:
    response = b"\0" + user.encode() + b"\0" + password.encode()  # SASL PLAIN
    args = table(properties) + shortstr("PLAIN") + longstr(response) + shortstr("en_US")
    return method(0, START_OK, args)


def tune_ok(channel_max: int, frame_max: int, heartbeat: int) -> bytes:
    return method(0, TUNE_OK, struct.pack(">HIH", channel_max, frame_max, heartbeat))


def connection_open(vhost: str) -> bytes:
    return method(0, OPEN, shortstr(vhost) + b"\x00\x00")  # reserved shortstr, reserved bit


def connection_close(code: int, text: str) -> bytes:
    return method(0, CLOSE, struct.pack(">H", code) + shortstr(text) + b"\0\0\0\0")


def close_ok(channel: int = 0) -> bytes:
    return method(channel, CLOSE_OK if channel == 0 else CHANNEL_CLOSE_OK)


def channel_open(channel: int) -> bytes:
    return method(channel, CHANNEL_OPEN, b"\x00")


def _bits(*flags: bool) -> bytes:
    return bytes((sum(1 << i for i, f in enumerate(flags) if f),))


def exchange_declare(
    channel: int, name: str, kind: str, *, arguments: Optional[Mapping[str, Any]] = None
) -> bytes:
    """A non-durable exchange (fleetbeat's messages are transient: nothing survives a restart)."""
    args = b"\0\0" + shortstr(name) + shortstr(kind)
    # passive, durable, auto-delete, internal, no-wait
    args += _bits(False, False, False, False, False) + table(arguments)
    return method(channel, EXCHANGE_DECLARE, args)


def exchange_bind(channel: int, destination: str, source: str, key: str) -> bytes:
    args = b"\0\0" + shortstr(destination) + shortstr(source) + shortstr(key) + b"\0" + table(None)
    return method(channel, EXCHANGE_BIND, args)


def queue_declare(
    channel: int,
    name: str,
    *,
    exclusive: bool = False,
    auto_delete: bool = False,
    arguments: Optional[Mapping[str, Any]] = None,
) -> bytes:
    args = b"\0\0" + shortstr(name) + _bits(False, False, exclusive, auto_delete, False)
    return method(channel, QUEUE_DECLARE, args + table(arguments))


def queue_bind(channel: int, queue: str, exchange: str, key: str) -> bytes:
    args = b"\0\0" + shortstr(queue) + shortstr(exchange) + shortstr(key) + b"\0" + table(None)
    return method(channel, QUEUE_BIND, args)


def basic_consume(channel: int, queue: str, tag: str, *, no_ack: bool = True) -> bytes:
    args = b"\0\0" + shortstr(queue) + shortstr(tag) + _bits(False, no_ack, False, False)
    return method(channel, CONSUME, args + table(None))


def publish_method(channel: int, exchange: str, routing_key: str) -> bytes:
    """The Basic.Publish frame for one routing key: no mandatory, no immediate. Cache it."""
    return method(channel, PUBLISH, b"\0\0" + shortstr(exchange) + shortstr(routing_key) + b"\0")


def basic_properties(content_type: str, headers: Mapping[str, Any],
                     expiration_ms: Optional[int]) -> bytes:  # fmt: skip
    """Property flags and list: content-type, headers, delivery-mode 1 (transient), expiration."""
    flags = 0x8000 | 0x2000 | 0x1000  # content-type, headers, delivery-mode
    props = shortstr(content_type) + table(headers) + b"\x01"
    if expiration_ms is not None:
        flags |= 0x0100
        props += shortstr(str(expiration_ms))
    return struct.pack(">H", flags) + props


def publish(channel: int, method_frame: bytes, props: bytes, body: bytes) -> bytes:
    """Basic.Publish + content header + one body frame: the bytes of one message."""
    header = _CONTENT.pack(HEADER, channel, 12 + len(props), 60, 0, len(body))
    return b"".join((method_frame, header, props, _END,
                     _BODY_HEAD.pack(BODY, channel, len(body)), body, _END))  # fmt: skip


# --- frames we read ----------------------------------------------------------------------------


def split_frames(buf: bytearray, limit: int) -> tuple[list[Frame], int]:
    """The whole frames at the start of `buf` and how many bytes they took.

    Raises FrameError for a frame larger than `limit` (the negotiated frame_max) or
    without its frame-end octet.
    """
    frames: list[Frame] = []
    pos, end = 0, len(buf)
    while end - pos >= 7:
        kind, channel, size = _HEAD.unpack_from(buf, pos)
        if size + FRAME_OVERHEAD > limit:
            raise FrameError(f"frame of {size} bytes exceeds frame_max {limit}")
        stop = pos + 7 + size
        if stop >= end:
            break
        if buf[stop] != FRAME_END:
            raise FrameError(f"frame-end octet missing (got 0x{buf[stop]:02x})")
        frames.append(Frame(kind, channel, bytes(buf[pos + 7 : stop])))
        pos = stop + 1
    return frames, pos


def method_ids(payload: bytes) -> tuple[int, int]:
    if len(payload) < 4:
        raise FrameError("method frame shorter than its class and method ids")
    ids: tuple[int, int] = struct.unpack_from(">HH", payload)
    return ids


def _shortstr_at(payload: bytes, pos: int) -> tuple[str, int]:
    n = payload[pos]
    return payload[pos + 1 : pos + 1 + n].decode(errors="replace"), pos + 1 + n


def parse_start(payload: bytes) -> tuple[int, int, list[str]]:
    """Connection.Start: (major, minor, SASL mechanisms)."""
    major, minor = payload[4], payload[5]
    (props_len,) = struct.unpack_from(">I", payload, 6)
    pos = 10 + props_len
    (n,) = struct.unpack_from(">I", payload, pos)
    mechanisms = payload[pos + 4 : pos + 4 + n].decode(errors="replace").split()
    return major, minor, mechanisms


def parse_tune(payload: bytes) -> tuple[int, int, int]:
    """Connection.Tune: (channel_max, frame_max, heartbeat)."""
    values: tuple[int, int, int] = struct.unpack_from(">HIH", payload, 4)
    return values


def parse_close(payload: bytes) -> tuple[int, str]:
    """Connection.Close or Channel.Close: (reply code, reply text)."""
    (code,) = struct.unpack_from(">H", payload, 4)
    return code, _shortstr_at(payload, 6)[0]


def parse_blocked(payload: bytes) -> str:
    return _shortstr_at(payload, 4)[0] if len(payload) > 4 else ""


def parse_declare_ok(payload: bytes) -> str:
    """Queue.Declare-Ok: the queue's name (the server's, for a server-named queue)."""
    return _shortstr_at(payload, 4)[0]


def parse_deliver(payload: bytes) -> str:
    """Basic.Deliver: the routing key it was published with."""
    pos = _shortstr_at(payload, 4)[1] + 9  # consumer tag, delivery tag, redelivered
    pos = _shortstr_at(payload, pos)[1]  # exchange
    return _shortstr_at(payload, pos)[0]


def body_size(payload: bytes) -> int:
    """A content header's body size."""
    (size,) = struct.unpack_from(">Q", payload, 4)
    return int(size)


_IDS = struct.Struct(">HH")
_SIZE = struct.Struct(">Q")
_DELIVER = DELIVER


class Deliveries:
    """Reassembles Basic.Deliver + content header + body frames into (routing key, body).

    The collector's hot path, so it reads the frames in place (no Frame per
    frame, no copy but the body's). Other method frames (a Close) are kept in
    `others` for the caller; heartbeats are skipped. Raises FrameError as
    `split_frames` does.
    """

    def __init__(self, frame_max: int) -> None:
        self.frame_max = frame_max
        self.buf = bytearray()
        self.others: list[Frame] = []
        self._key: Optional[bytes] = None
        self._parts: list[bytes] = []
        self._left = 0

    def feed(self, data: bytes) -> list[tuple[bytes, bytes]]:
        buf = self.buf
        buf += data
        out: list[tuple[bytes, bytes]] = []
        key, parts, left = self._key, self._parts, self._left
        unpack, limit = _HEAD.unpack_from, self.frame_max - FRAME_OVERHEAD
        pos, end = 0, len(buf)
        while end - pos >= 7:
            kind, channel, size = unpack(buf, pos)
            if size > limit:
                raise FrameError(f"frame of {size} bytes exceeds frame_max {self.frame_max}")
            start, stop = pos + 7, pos + 7 + size
            if stop >= end:
                break
            if buf[stop] != FRAME_END:
                raise FrameError(f"frame-end octet missing (got 0x{buf[stop]:02x})")
            pos = stop + 1
            if kind == BODY:
                if key is None:
                    continue
                parts.append(bytes(buf[start:stop]))
                left -= size
                if left > 0:
                    continue
            elif kind == HEADER:
                if key is None:
                    continue
                left = _SIZE.unpack_from(buf, start + 4)[0]
                if left > 0:
                    continue
            elif kind == METHOD:
                if _IDS.unpack_from(buf, start) == _DELIVER:
                    p = start + 4
                    p += 1 + buf[p] + 9  # consumer tag, delivery tag, redelivered
                    p += 1 + buf[p]  # exchange
                    key, parts = bytes(buf[p + 1 : p + 1 + buf[p]]), []
                else:
                    self.others.append(Frame(kind, channel, bytes(buf[start:stop])))
                continue
            else:
                continue
            out.append((key, parts[0] if len(parts) == 1 else b"".join(parts)))
            key = None
        del buf[:pos]
        self._key, self._parts, self._left = key, parts, left
        return out
