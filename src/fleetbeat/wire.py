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

import json
import math
import re
from typing import Any, Optional

VERSION = 1
KINDS = ("hb", "rd", "bye")
DEVICE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
RUN_ID = re.compile(r"[0-9a-f]{16}")
MAX_SEQ = 2**64 - 1

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


# --- parsing (the collector's side) -------------------------------------------------


class WireError(ValueError):
    """A payload is not valid wire v1; `reason` is a short label counted by receivers."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        super().__init__(f"{reason}: {detail}" if detail else reason)


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


def parse(data: bytes, *, max_size: int = 65507) -> Message:
    """Parse and validate one payload; raise WireError with a countable reason."""
    if len(data) > max_size:
        raise WireError("oversize", f"{len(data)} bytes")
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise WireError("not_json", str(exc)) from None
    if type(obj) is not dict:
        raise WireError("not_object")
    if obj.get("v") != VERSION:
        raise WireError("bad_version", repr(obj.get("v")))
    kind = obj.get("k")
    if kind not in KINDS:
        raise WireError("bad_kind", repr(kind))
    dev = obj.get("dev")
    if type(dev) is not str or not DEVICE_ID.fullmatch(dev):
        raise WireError("bad_device_id", repr(dev)[:80])
    run = obj.get("run")
    if type(run) is not str or not RUN_ID.fullmatch(run):
        raise WireError("bad_run", repr(run)[:40])
    seq = obj.get("seq")
    if type(seq) is not int or not 0 <= seq <= MAX_SEQ:
        raise WireError("bad_seq", repr(seq)[:40])
    if not _is_number(obj.get("ts")):
        raise WireError("bad_field", "ts")
    if kind == "hb":
        interval = obj.get("int")
        if not _is_number(interval) or interval <= 0:  # type: ignore[operator]
            raise WireError("bad_field", "int")
        for key in ("bt", "drop"):
            if key in obj and not _is_number(obj[key]):
                raise WireError("bad_field", key)
        ver = obj.get("ver")
        if ver is not None and type(ver) is not str:
            raise WireError("bad_field", "ver")
        tags = obj.get("tags")
        if tags is not None and (
            type(tags) is not dict or not all(type(v) is str for v in tags.values())
        ):
            raise WireError("bad_field", "tags")
    elif kind == "rd":
        src = obj.get("src")
        if type(src) is not str or not src:
            raise WireError("bad_field", "src")
        rate = obj.get("rate")
        if rate is not None and (not _is_number(rate) or not 0 < rate <= 1):
            raise WireError("bad_field", "rate")
    m = obj.get("m")
    if m is not None and (type(m) is not dict or not all(_is_number(v) for v in m.values())):
        raise WireError("bad_field", "m")
    return Message(obj)
