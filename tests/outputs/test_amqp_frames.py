"""AMQP 0-9-1 framing, byte for byte, and as an independent codec (pamqp) reads it."""

from __future__ import annotations

import pamqp.frame
import pytest

from fleetbeat.outputs import amqp_frames as f


def decode(data: bytes) -> list[object]:
    """Every frame in `data` as pamqp decodes it (it raises on anything malformed)."""
    out = []
    while data:
        used, _, obj = pamqp.frame.unmarshal(data)
        out.append(obj)
        data = data[used:]
    return out


def test_publish_is_three_frames_byte_for_byte():
    """Basic.Publish, a content header (content-type, headers, delivery-mode 1, expiration) and one body frame."""
    method = f.publish_method(1, "ex", "p.d.hb")
    props = f.basic_properties("application/json", {"dev": "d"}, 60000)
    assert method == (
        b"\x01\x00\x01\x00\x00\x00\x11"  # method frame, channel 1, 17 bytes
        b"\x00\x3c\x00\x28"  # Basic (60) . Publish (40)
        b"\x00\x00\x02ex\x06p.d.hb\x00\xce"  # reserved, exchange, routing key, no flags
    )
    assert props == (
        b"\xb1\x00"  # content-type, headers, delivery-mode, expiration
        b"\x10application/json"
        b"\x00\x00\x00\x0a\x03devS\x00\x00\x00\x01d"  # {"dev": "d"}
        b"\x01"  # transient
        b"\x0560000"  # ms
    )
    data = f.publish(1, method, props, b"{}")
    assert (
        data
        == method
        + (
            b"\x02\x00\x01\x00\x00\x00\x34"  # header frame, 12 + 40 bytes
            b"\x00\x3c\x00\x00" + (2).to_bytes(8, "big") + props + b"\xce"
            b"\x03\x00\x01\x00\x00\x00\x02{}\xce"  # body frame
        )
    )
    publish, header, body = decode(data)
    assert (publish.exchange, publish.routing_key, publish.mandatory) == ("ex", "p.d.hb", False)
    p = header.properties
    assert (header.body_size, p.content_type, p.headers) == (2, "application/json", {"dev": "d"})
    assert (p.delivery_mode, p.expiration) == (1, "60000")
    assert body.value == b"{}"


def test_no_expiration_leaves_the_property_out():
    """Without a TTL the expiration flag and field are absent."""
    assert (
        f.basic_properties("text/plain", {}, None) == b"\xb0\x00\x0atext/plain\x00\x00\x00\x00\x01"
    )


def test_heartbeat_and_handshake_frames():
    """The heartbeat frame, Tune-Ok, Connection.Open and Close are the spec's bytes."""
    assert f.HEARTBEAT_FRAME == b"\x08\x00\x00\x00\x00\x00\x00\xce"
    assert f.tune_ok(1, 131072, 30) == (
        b"\x01\x00\x00\x00\x00\x00\x0c\x00\x0a\x00\x1f\x00\x01\x00\x02\x00\x00\x00\x1e\xce"
    )
    assert (
        f.connection_open("/") == b"\x01\x00\x00\x00\x00\x00\x08\x00\x0a\x00\x28\x01/\x00\x00\xce"
    )
    assert f.connection_close(200, "ok") == (
        b"\x01\x00\x00\x00\x00\x00\x0d\x00\x0a\x00\x32\x00\xc8\x02ok\x00\x00\x00\x00\xce"
    )
    assert f.close_ok(0)[7:11] == b"\x00\x0a\x00\x33" and f.close_ok(1)[7:11] == b"\x00\x14\x00\x29"


def test_start_ok_sends_plain_credentials_and_capabilities():
    """Start-Ok carries the client properties table, SASL PLAIN \\0user\\0password and a locale."""
    props = {"product": "fleetbeat", "capabilities": {"connection.blocked": True}}
    (start_ok,) = decode(f.start_ok(props, "pi", "s3cret"))
    assert start_ok.client_properties == props
    assert (start_ok.mechanism, start_ok.response, start_ok.locale) == (
        "PLAIN",
        "\0pi\0s3cret",
        "en_US",
    )


def test_table_types():
    """Field tables encode bools as t, 32-bit ints as I, larger ones as l, strings as S, tables as F."""
    assert f.table({"a": True, "b": 5, "c": 2**40, "d": "x", "e": {}}) == (
        b"\x00\x00\x00\x25"
        b"\x01at\x01"
        b"\x01bI\x00\x00\x00\x05"
        b"\x01cl\x00\x00\x01\x00\x00\x00\x00\x00"
        b"\x01dS\x00\x00\x00\x01x"
        b"\x01eF\x00\x00\x00\x00"
    )
    with pytest.raises(TypeError):
        f.table({"x": 1.5})
    with pytest.raises(ValueError, match="255"):
        f.shortstr("x" * 256)


def test_consumer_topology_frames_decode():
    """Queue.Declare (bounded, exclusive), the binds and Basic.Consume (no-ack) decode with these fields."""
    bounds = {"x-max-length": 5, "x-overflow": "drop-head", "x-message-ttl": 60000}
    declare, qbind, xbind, consume, exchange = decode(
        f.queue_declare(1, "", exclusive=True, auto_delete=True, arguments=bounds)
        + f.queue_bind(1, "q", "ex", "p.#")
        + f.exchange_bind(1, "ex.hash", "ex", "p.#")
        + f.basic_consume(1, "q", "tag")
        + f.exchange_declare(1, "ex.hash", "x-consistent-hash", arguments={"hash-header": "dev"})
    )
    assert (declare.queue, declare.exclusive, declare.auto_delete, declare.durable) == (
        "",
        True,
        True,
        False,
    )
    assert declare.arguments == bounds
    assert (qbind.queue, qbind.exchange, qbind.routing_key) == ("q", "ex", "p.#")
    assert (xbind.destination, xbind.source, xbind.routing_key) == ("ex.hash", "ex", "p.#")
    assert (consume.queue, consume.consumer_tag, consume.no_ack) == ("q", "tag", True)
    assert (exchange.exchange, exchange.exchange_type, exchange.durable) == (
        "ex.hash",
        "x-consistent-hash",
        False,
    )
    assert exchange.arguments == {"hash-header": "dev"}


def test_split_frames_keeps_a_partial_frame_and_rejects_garbage():
    """Whole frames are returned with the bytes they used; a partial one waits; a bad frame-end raises."""
    two = f.HEARTBEAT_FRAME + f.tune_ok(1, 4096, 0)
    buf = bytearray(two + f.HEARTBEAT_FRAME[:5])
    frames, used = f.split_frames(buf, 4096)
    assert [fr.kind for fr in frames] == [f.HEARTBEAT, f.METHOD] and used == len(two)
    assert f.method_ids(frames[1].payload) == f.TUNE_OK
    assert f.parse_tune(frames[1].payload) == (1, 4096, 0)
    with pytest.raises(f.FrameError, match="frame-end"):
        f.split_frames(bytearray(b"\x08\x00\x00\x00\x00\x00\x00\x00"), 4096)
    with pytest.raises(f.FrameError, match="frame_max"):
        f.split_frames(bytearray(b"\x03\x00\x01\x00\x01\x00\x00"), 4096)


def test_parsers_read_what_the_broker_sends():
    """Deliver's routing key, Close's code and text, Declare-Ok's queue name and a body size are read back."""
    deliver = b"\x00\x3c\x00\x3c\x03tag" + (7).to_bytes(8, "big") + b"\x00\x02ex\x06p.d.hb"
    assert f.parse_deliver(deliver) == "p.d.hb"
    close = f.connection_close(320, "CONNECTION_FORCED")[7:-1]
    assert f.parse_close(close) == (320, "CONNECTION_FORCED")
    assert f.parse_declare_ok(b"\x00\x32\x00\x0b\x05amq.q" + bytes(8)) == "amq.q"
    header = f.publish(1, b"", f.basic_properties("text/plain", {}, None), b"abc")[7:]
    assert f.body_size(header) == 3
    assert f.parse_blocked(b"\x00\x0a\x00\x3c\x0dlow on memory") == "low on memory"


def deliver(key: str, tag: int = 1) -> bytes:
    """A Basic.Deliver method frame as RabbitMQ sends it."""
    args = (
        f.shortstr("ctag") + tag.to_bytes(8, "big") + b"\x00" + f.shortstr("ex") + f.shortstr(key)
    )
    return f.method(1, f.DELIVER, args)


def test_deliveries_reassemble_messages_fed_in_any_pieces():
    """Deliver + header + body frames (a body in two frames, an empty one) come out whole, however the bytes are cut."""
    props = f.basic_properties("application/json", {"dev": "d"}, None)
    header = f.publish(1, b"", props, b"")[:-8]  # the header frame of an empty body
    body_of = lambda n: f.publish(1, b"", props, b"x" * n)[: -(n + 8)]  # noqa: E731
    stream = (
        deliver("p.a.hb") + body_of(5) + f.frame(f.BODY, 1, b"hel") + f.frame(f.BODY, 1, b"lo")
        + f.HEARTBEAT_FRAME
        + deliver("p.b.rd.s", 2) + header
        + deliver("p.c.hb", 3) + body_of(2) + f.frame(f.BODY, 1, b"{}")
        + f.connection_close(320, "CONNECTION_FORCED")
    )  # fmt: skip
    for cut in (1, 3, 7, 64, len(stream)):
        reader = f.Deliveries(4096)
        got = []
        for i in range(0, len(stream), cut):
            got += reader.feed(stream[i : i + cut])
        assert got == [(b"p.a.hb", b"hello"), (b"p.b.rd.s", b""), (b"p.c.hb", b"{}")], cut
        assert [f.method_ids(o.payload) for o in reader.others] == [f.CLOSE]
        assert reader.buf == bytearray()
    with pytest.raises(f.FrameError):
        f.Deliveries(4096).feed(deliver("k")[:-1] + b"\x00")
