"""MQTT packet framing, byte for byte against the MQTT 3.1.1 and 5 specifications."""

from __future__ import annotations

import pytest

from fleetbeat.outputs.mqtt_packets import (
    properties,
    publish,
    publish_head,
    topic_level,
    varint,
)


@pytest.mark.parametrize(
    ("n", "encoded"),
    [
        (0, b"\x00"),
        (127, b"\x7f"),
        (128, b"\x80\x01"),
        (16383, b"\xff\x7f"),
        (16384, b"\x80\x80\x01"),
        (2097151, b"\xff\xff\x7f"),
        (2097152, b"\x80\x80\x80\x01"),
        (268435455, b"\xff\xff\xff\x7f"),
    ],
)
def test_varint_matches_the_specification_table(n, encoded):
    """The remaining length is encoded as in MQTT 3.1.1 table 2.4 (one to four bytes)."""
    assert varint(n) == encoded


def test_a_qos0_publish_is_framed_exactly():
    """A QoS 0 PUBLISH: 0x30, the remaining length, the topic with its length, the payload."""
    head = publish_head("a/b", b"")
    assert head == b"\x00\x03a/b"
    assert publish(head, b"hi") == b"\x30\x07\x00\x03a/bhi"


def test_the_retain_flag_sets_bit_zero():
    """Retained publishes (the status topic) carry 0x31."""
    assert publish(publish_head("s", b""), b"online", retain=True) == b"\x31\x09\x00\x01sonline"


def test_mqtt5_properties():
    """MQTT 5 PUBLISH has an empty property block, or the message expiry (0x02, 4 bytes)."""
    assert properties(False, 300.0) == b""
    assert properties(True, None) == b"\x00"
    assert properties(True, 300.0) == b"\x05\x02\x00\x00\x01\x2c"
    assert publish(publish_head("t", properties(True, None)), b"x") == b"\x30\x05\x00\x01t\x00x"


def test_a_long_payload_gets_a_two_byte_length():
    """200 bytes of payload after a 3-byte head: remaining length 203 = 0xcb 0x01."""
    packet = publish(publish_head("t", b""), b"p" * 200)
    assert packet[:3] == b"\x30\xcb\x01"
    assert len(packet) == 3 + 203


def test_topic_level_replaces_wildcards_and_nul():
    """A sensor name cannot subscribe anyone to more than its own topic level."""
    assert topic_level("we+ath#er\0") == "we_ath_er_"
    assert topic_level(None) == "unknown"
