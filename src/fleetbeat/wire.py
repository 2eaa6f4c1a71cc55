"""Wire format v1: the one place that builds and parses what agents send.

One JSON object (UTF-8) per datagram or MQTT payload:

    {"v":1,"k":"hb","dev":"pi-kitchen","run":"9f1c2a7b3d4e5f60","seq":42,
     "ts":1764160000.123,"int":10,"bt":1764150000,"ver":"0.1.0","drop":0,
     "tags":{"site":"kitchen"},"m":{"cpu":3.5,"mem":41.2,"temp":48.3}}

`k` is "hb" (heartbeat), "rd" (readings, with `src` and optionally `rate`) or
"bye" (graceful stop). Heartbeats may also carry `drop_by` (local drops of this
output by reason) and `err` (sensor errors: sensor -> reason -> count); receivers
ignore fields they do not know.
"""

from __future__ import annotations

import binascii
import json
import math
import re
from _operator import _compare_digest  # hmac.compare_digest, without importing OpenSSL
from typing import Any, Callable, Optional, Protocol

from fleetbeat.errors import InputError

VERSION = 1
KINDS = ("hb", "rd", "bye")
DEVICE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
RUN_ID = re.compile(r"[0-9a-f]{16}")
MAX_SEQ = 2**64 - 1  # seq is unsigned 64-bit; the loss arithmetic uses Python ints
MAX_COUNT = 2**63 - 1  # counters (drop) fit a signed 64-bit SQLite INTEGER
MIN_EPOCH, MAX_EPOCH = 0.0, 4102444800.0  # ts and bt: 1970 (no RTC yet) .. 2100-01-01
MIN_INTERVAL, MAX_INTERVAL = 0.01, 86400.0  # int, s: what liveness deadlines can use
MAX_TEXT = 128  # characters in ver, src, a tag key or value, a metric name
MAX_DEPTH = 16  # containers nested in one message (the format itself needs 3)

_dumps = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, separators=(",", ":"), check_circular=False
).encode


def clean_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """Keep finite numbers (bools become 0/1); NaN, inf and non-numbers are left out."""
    out: dict[str, float] = {}
    for name, value in metrics.items():
        if value is True or value is False:
            out[name] = int(value)
        elif type(value) is int or (type(value) is float and math.isfinite(value)):
            out[name] = value
    return out


def dumps(obj: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON; raises ValueError on NaN or inf (clean metrics first)."""
    return _dumps(obj).encode()


_KEYS: dict[str, str] = {}  # metric name -> its JSON-escaped form and colon


def metrics_json(metrics: dict[str, float]) -> str:
    """A clean metrics dict as a JSON object: faster than json for the hot path.

    Values must be finite ints or floats (see `clean_metrics`): Python's repr of
    those is valid JSON.
    """
    keys = _KEYS
    parts = []
    for name, value in metrics.items():
        key = keys.get(name)
        if key is None:
            key = _dumps(name) + ":"
            if len(keys) < 10_000:  # bounded: names come from configs and devices
                keys[name] = key
        parts.append(key + repr(value))
    return "{" + ",".join(parts) + "}"


def dumps_str(obj: Any) -> str:
    """Compact JSON as text, for payloads assembled from pre-encoded parts."""
    return _dumps(obj)


# --- signing (both sides) -----------------------------------------------------------
#
# With a key, the agent appends `,"sig":"<tag>"` as the last member: <tag> is the
# unpadded base64url of the first 16 bytes of HMAC-SHA256(key, the message's bytes
# without that member). The member has a fixed size, so the collector finds it by
# position, never by parsing: a message is signed exactly when its last 32 bytes are
# `,"sig":"` + 22 base64url characters + `"}`.

SIG_PREFIX = b',"sig":"'
TAG_BYTES = 16
TAG_CHARS = 22  # unpadded base64url of 16 bytes
SIG_LEN = len(SIG_PREFIX) + TAG_CHARS + 2  # the member and the closing `"}`: 32 bytes
_B64_TO_URL = bytes.maketrans(b"+/", b"-_")
_URL_TO_B64 = bytes.maketrans(b"-_", b"+/")


class Mac(Protocol):
    """A keyed MAC: `fleetbeat.hmac_sha256.HmacSha256`."""

    def digest(self, data: bytes) -> bytes: ...


def signature(body: bytes, mac: Mac) -> bytes:
    """The 22 base64url characters that sign `body` (a whole JSON object)."""
    return binascii.b2a_base64(mac.digest(body)[:TAG_BYTES], newline=False)[:TAG_CHARS].translate(
        _B64_TO_URL
    )


def sign(body: bytes, mac: Mac) -> bytes:
    """`body` (compact JSON ending in `}`) with its `"sig"` member appended last."""
    return body[:-1] + SIG_PREFIX + signature(body, mac) + b'"}'


def split_signed(data: bytes) -> tuple[bytes, Optional[bytes]]:
    """(the signed bytes, the 22-character tag) of a signed message; (data, None) if unsigned.

    The signed bytes are the message without its `sig` member, as the agent signed them.
    """
    if (
        len(data) > SIG_LEN
        and data[-2:] == b'"}'
        and data[-SIG_LEN : -SIG_LEN + len(SIG_PREFIX)] == SIG_PREFIX
    ):
        return data[:-SIG_LEN] + b"}", data[-TAG_CHARS - 2 : -2]
    return data, None


def tag_matches(body: bytes, tag: bytes, mac: Mac) -> bool:
    """Constant-time check of a tag from `split_signed` against `body`."""
    return _compare_digest(signature(body, mac), tag)


# --- parsing (the collector's side) -------------------------------------------------


class WireError(InputError):
    """A payload is not valid wire v1; `reason` is a short label counted by receivers."""


class Message:
    """A parsed, validated wire v1 message."""

    __slots__ = (
        "bt", "dev", "drop", "interval", "kind", "metrics", "rate", "raw", "run", "seq", "src",
        "tags", "ts", "ver",
    )  # fmt: skip

    def __init__(self, raw: dict[str, Any]) -> None:
        self.raw = raw
        self.kind: str = raw["k"]
        self.dev: str = raw["dev"]
        self.run: str = raw["run"]
        self.seq: int = raw["seq"]
        self.ts: float = raw["ts"]
        self.interval: Optional[float] = raw.get("int")
        self.bt: Optional[float] = raw.get("bt")
        self.ver: Optional[str] = raw.get("ver")
        self.drop: Optional[int] = raw.get("drop")
        self.tags: Optional[dict[str, str]] = raw.get("tags")
        self.metrics: Optional[dict[str, float]] = raw.get("m")
        self.src: Optional[str] = raw.get("src")
        self.rate: Optional[float] = raw.get("rate")


def _is_number(x: Any) -> bool:
    t = type(x)
    return (t is int or t is float) and math.isfinite(x)


_INT_MIN, _INT_END = -(2**63), 2**64  # what orjson reads as an int; anything wider is a float


def _int64(text: str) -> Any:
    """The stdlib's integers read the way orjson reads them: wider than 64 bits is a float.

    So both parsers agree, and a 400-digit integer becomes inf (rejected as not finite)
    instead of a number that `float()` cannot take later.
    """
    if len(text) <= 20:  # -9223372036854775808 and 18446744073709551615 are 20 characters
        value = int(text)
        if _INT_MIN <= value < _INT_END:
            return value
    return float(text)


_std_decoder = json.JSONDecoder(parse_int=_int64)
_scan_once = _std_decoder.scan_once  # type: ignore[attr-defined]  # the C scanner, bare
_isfinite = math.isfinite
_dev_ok = DEVICE_ID.fullmatch
_run_ok = RUN_ID.fullmatch
# \ud800-\udfff escapes: the stdlib decodes a lone one into a str that cannot be encoded
_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")


def _std_loads(data: bytes) -> Any:
    text = data.decode()
    obj, end = _scan_once(text, 0)  # RecursionError: `_loads` tries again, then says too_deep
    if end != len(text):
        raise ValueError("extra data")
    return obj


_fast_loads: Optional[Callable[[bytes], Any]] = None


def json_parser() -> str:
    """Which JSON parser `parse` uses: "orjson" when installed (faster), else "json"."""
    global _fast_loads
    if _fast_loads is None:
        try:  # imported here, not at the top: agents never parse and need not load it
            import orjson

            _fast_loads = orjson.loads
        except ImportError:
            _fast_loads = _std_loads
    return "json" if _fast_loads is _std_loads else "orjson"


def _loads(data: bytes) -> Any:
    if _fast_loads is None:
        json_parser()
    try:
        obj = _fast_loads(data)  # type: ignore[misc]
        if _fast_loads is not _std_loads:
            return obj  # orjson: valid UTF-8, no lone surrogates, ints within 64 bits
    except (ValueError, StopIteration, RecursionError):
        # anything unusual (surrounding whitespace, bad UTF-8, a syntax error, an integer
        # beyond 64 bits, nesting past orjson's 1024): the standard parser gives the verdict
        try:
            obj = _std_decoder.decode(data.decode())
        except RecursionError:
            raise WireError("too_deep", "nesting beyond the parser's limit") from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise WireError("not_json", str(exc)) from None
    if b"\\u" in data and _SURROGATE.search(data):
        try:  # a surrogate pair is fine; a lone surrogate cannot be stored or served
            _dumps_any(obj).encode()
        except UnicodeEncodeError:
            raise WireError("bad_text", "lone surrogate") from None
    return obj


_dumps_any = json.JSONEncoder(ensure_ascii=False, check_circular=False).encode


def _depth(obj: Any) -> int:
    """How deeply containers nest in a parsed document (1 for a flat object)."""
    deepest = 0
    stack = [(obj, 1)]
    while stack:
        x, level = stack.pop()
        if level > deepest:
            deepest = level
            if deepest > MAX_DEPTH:
                break
        for y in x.values() if type(x) is dict else x:
            if type(y) is dict or type(y) is list:
                stack.append((y, level + 1))
    return deepest


def parse(data: bytes, *, max_size: int = 65507) -> Message:
    """Parse and validate one payload; raise WireError with a countable reason."""
    return Message(parse_fields(data, max_size=max_size))


def parse_fields(data: bytes, *, max_size: int = 65507) -> dict[str, Any]:
    """Like `parse`, but return the validated JSON object itself (the collector's fast path).

    Every field the collector keeps is checked to its type and range here, so what
    passes can be stored, served and reloaded (a restart) without fail:

    - `seq`: an integer 0 .. 2**64 - 1 (the loss arithmetic's 64-bit sequence space);
    - `ts`, `bt`: finite numbers from 0 (1970, a Pi without a real-time clock) to
      4102444800 (2100-01-01), the epochs a device clock can sanely show;
    - `int`: 0.01 s .. 86400 s (a day);
    - `drop`: an integer 0 .. 2**63 - 1 (a signed 64-bit SQLite column);
    - `ver`, `src`, tag keys and values, metric names: text of at most MAX_TEXT
      characters, valid Unicode (no lone surrogates); `src` not empty;
    - `m` values: finite floats or integers within 64 bits; `rate`: 0 < rate <= 1;
    - containers nested at most MAX_DEPTH deep, anywhere in the document.

    Reasons: oversize, not_json, too_deep, bad_text, not_object, bad_version, bad_kind,
    bad_device_id, bad_run, bad_seq, bad_field (the detail names the field).
    """
    if len(data) > max_size:
        raise WireError("oversize", f"{len(data)} bytes")
    obj = _loads(data)
    if type(obj) is not dict:
        raise WireError("not_object")
    # fewer brackets than MAX_DEPTH cannot nest deeper; heartbeats have no "[" at all
    if (b"[" in data or data.count(b"{") > MAX_DEPTH) and _depth(obj) > MAX_DEPTH:
        raise WireError("too_deep", f"nesting beyond {MAX_DEPTH}")
    get = obj.get
    x: Any = get("v")
    if x != VERSION or type(x) is not int:
        raise WireError("bad_version", repr(x)[:40])
    kind = get("k")
    if kind not in KINDS or type(kind) is not str:
        raise WireError("bad_kind", repr(kind)[:40])
    dev = get("dev")
    if type(dev) is not str or not _dev_ok(dev):
        raise WireError("bad_device_id", repr(dev)[:80])
    run = get("run")
    if type(run) is not str or not _run_ok(run):
        raise WireError("bad_run", repr(run)[:40])
    seq = get("seq")
    if type(seq) is not int or not 0 <= seq <= MAX_SEQ:
        raise WireError("bad_seq", repr(seq)[:40])
    x = get("ts")
    t = type(x)
    if not ((t is float or t is int) and MIN_EPOCH <= x <= MAX_EPOCH):  # NaN fails too
        raise WireError("bad_field", "ts")
    if kind == "hb":
        x = get("int")
        t = type(x)
        if not ((t is float or t is int) and MIN_INTERVAL <= x <= MAX_INTERVAL):
            raise WireError("bad_field", "int")
        x = get("bt")
        if x is not None:
            t = type(x)
            if not ((t is float or t is int) and MIN_EPOCH <= x <= MAX_EPOCH):
                raise WireError("bad_field", "bt")
        x = get("drop")
        if x is not None and (type(x) is not int or not 0 <= x <= MAX_COUNT):
            raise WireError("bad_field", "drop")
        x = get("ver")
        if x is not None and (type(x) is not str or len(x) > MAX_TEXT):
            raise WireError("bad_field", "ver")
        x = get("tags")
        if x is not None:
            if type(x) is not dict:
                raise WireError("bad_field", "tags")
            for key, y in x.items():
                if type(y) is not str or len(y) > MAX_TEXT or len(key) > MAX_TEXT:
                    raise WireError("bad_field", "tags")
    elif kind == "rd":
        x = get("src")
        if type(x) is not str or not x or len(x) > MAX_TEXT:
            raise WireError("bad_field", "src")
        x = get("rate")
        if x is not None and (not _is_number(x) or not 0 < x <= 1):
            raise WireError("bad_field", "rate")
    x = get("m")
    if x is not None:
        if type(x) is not dict:
            raise WireError("bad_field", "m")
        if x:
            if max(map(len, x)) > MAX_TEXT:
                raise WireError("bad_field", "m")
            for y in x.values():
                t = type(y)
                # ints are within 64 bits by construction (orjson, or `_int64`)
                if not ((t is float and _isfinite(y)) or t is int):
                    raise WireError("bad_field", "m")
    return obj
