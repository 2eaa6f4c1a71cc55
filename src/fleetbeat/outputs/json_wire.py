"""JSON encoder: wire format v1, the collector's format and the default.

With a signing key (`[agent] key_file`), every message carries its `sig` member last
(wire.sign): on every transport, since they all send what this encoder makes.

```toml
[[outputs.udp]]
format = "json"
```
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Callable

from fleetbeat import wire
from fleetbeat.outputs.base import Identity, Outgoing

_SEQ_DIGITS = 20  # a 64-bit seq: room reserved before the seq is drawn


class JsonEncoder:
    """Encodes messages as wire v1; splits readings that exceed the limit."""

    def __init__(self, identity: Identity, *, prefix: str = "") -> None:
        self.identity = identity  # `prefix` names metrics in the line formats; JSON has none
        dev = json.dumps(identity.dev, ensure_ascii=False)
        # Everything before the seq is fixed for the life of the agent: build it once.
        run = identity.run
        self._prefix = {
            kind: f'{{"v":{wire.VERSION},"k":"{kind}","dev":{dev},"run":"{run}","seq":'
            for kind in wire.KINDS
        }
        self._hb_static: tuple[Any, str, str] | None = None

    def encode(
        self, msg: Outgoing, next_seq: Callable[[], int], limit: int
    ) -> tuple[list[bytes], int]:
        if msg.kind == "rd":
            return self._readings(msg, next_seq, limit)
        if msg.kind == "hb":
            return self._heartbeat(msg, next_seq, limit)
        payload = self._payload(msg.kind, f'"ts":{msg.ts:.3f}}}', next_seq, limit)
        return ([payload], 0) if payload is not None else ([], 1)

    def _heartbeat(
        self, msg: Outgoing, next_seq: Callable[[], int], limit: int
    ) -> tuple[list[bytes], int]:
        # The hot path of a quiet agent: the fields that never change between two
        # heartbeats are encoded once, so each heartbeat encodes only ts, drop and m.
        if self._hb_static is None or self._hb_static[0] != msg.interval:
            ident = self.identity
            fixed = {"int": msg.interval, "bt": ident.boot_time, "ver": ident.version}
            tags_json = wire.dumps_str({"tags": ident.tags})[1:-1] if ident.tags else ""
            self._hb_static = (msg.interval, wire.dumps_str(fixed)[1:-1], tags_json)
        _, static, tags = self._hb_static
        extra: dict[str, Any] = {}
        if msg.drop_by:
            extra["drop_by"] = msg.drop_by
        if msg.errors:
            extra["err"] = msg.errors
        extra_json = "," + wire.dumps_str(extra)[1:-1] if extra else ""
        if tags:
            extra_json += "," + tags
        metrics = wire.metrics_json(msg.metrics)
        body = f'"ts":{msg.ts:.3f},{static},"drop":{msg.drop}{extra_json},"m":{metrics}}}'
        payload = self._payload("hb", body, next_seq, limit)
        if payload is None:
            # metrics, errors and tags are extras: never lose the heartbeat itself for them
            body = f'"ts":{msg.ts:.3f},{static},"drop":{msg.drop},"m":{{}}}}'
            payload = self._payload("hb", body, next_seq, limit)
        return ([payload], 0) if payload is not None else ([], 1)

    def _payload(
        self, kind: str, body: str, next_seq: Callable[[], int], limit: int
    ) -> bytes | None:
        """The message: fixed prefix, a seq, then `body` (the fields after seq and the
        closing brace); None, with no seq drawn, when it could exceed `limit` bytes."""
        prefix = self._prefix[kind]  # ASCII, as device ids are
        size = len(body) if body.isascii() else len(body.encode())  # bytes, not characters
        mac = self.identity.mac
        if len(prefix) + _SEQ_DIGITS + size + (wire.SIG_LEN if mac else 0) > limit:
            return None
        payload = f"{prefix}{next_seq()},{body}".encode()
        return payload if mac is None else wire.sign(payload, mac)

    def _readings(
        self, msg: Outgoing, next_seq: Callable[[], int], limit: int
    ) -> tuple[list[bytes], int]:
        head = f'"ts":{msg.ts:.3f},"src":{wire.dumps_str(msg.src)}'
        if msg.rate < 1.0:
            head += f',"rate":{msg.rate!r}'
        payload = self._payload(
            "rd", f'{head},"m":{wire.metrics_json(msg.metrics)}}}', next_seq, limit
        )
        if payload is not None:  # the usual case: one message
            return [payload], 0
        payloads: list[bytes] = []
        too_large = 0
        pending = [list(msg.metrics.items())]
        while pending:
            items = pending.pop()
            body = f'{head},"m":{wire.metrics_json(dict(items))}}}'
            payload = self._payload("rd", body, next_seq, limit)
            if payload is not None:
                payloads.append(payload)
            elif len(items) <= 1:
                too_large += 1
            else:
                half = len(items) // 2
                pending.append(items[half:])  # popped second: metrics keep their order
                pending.append(items[:half])
        return payloads, too_large


if TYPE_CHECKING:  # mypy checks the class against the encoder contract
    from fleetbeat.outputs.base import EncoderClass

    _: EncoderClass = JsonEncoder
