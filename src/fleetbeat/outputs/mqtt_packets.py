"""MQTT packet framing for the QoS 0 PUBLISH the MQTT output writes itself: pure functions.

Only what `mqtt_publish` builds by hand (paho builds CONNECT, PINGREQ and the
rest). MQTT 3.1.1 section 2.2 / MQTT 5 section 2.1.4 (fixed header, variable
byte integer), 3.3 (PUBLISH), 3.3.2.3 (properties; 0x02 message expiry).
"""

from __future__ import annotations

from typing import Optional

PUBLISH = (b"\x30", b"\x31")  # fixed header byte: QoS 0 PUBLISH, without / with retain
MAX_PACKET = 268435460  # MQTT's largest packet; an MQTT 5 broker may announce less


def varint(n: int) -> bytes:
    """MQTT's variable byte integer (the remaining length)."""
    if n < 0x4000:  # heartbeats and most readings: one or two bytes
        return bytes((n,)) if n < 0x80 else bytes(((n & 0x7F) | 0x80, n >> 7))
    out = bytearray()
    while True:
        n, digit = n >> 7, n & 0x7F
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def properties(v5: bool, expiry: Optional[float]) -> bytes:
    """A PUBLISH's property block: none in 3.1.1; empty, or the message expiry, in MQTT 5."""
    if not v5:
        return b""
    return b"\x00" if expiry is None else b"\x05\x02" + int(expiry).to_bytes(4, "big")


def publish_head(topic: str, props: bytes) -> bytes:
    """What follows the fixed header of a QoS 0 PUBLISH on `topic`, before the payload."""
    raw = topic.encode()
    return len(raw).to_bytes(2, "big") + raw + props


def publish(head: bytes, payload: bytes, *, retain: bool = False) -> bytes:
    """A whole QoS 0 PUBLISH packet."""
    return b"".join((PUBLISH[retain], varint(len(head) + len(payload)), head, payload))


def topic_level(name: Optional[str]) -> str:
    """A sensor name as one topic level: MQTT wildcards and NUL become `_`."""
    return (name or "unknown").replace("+", "_").replace("#", "_").replace("\0", "_")
