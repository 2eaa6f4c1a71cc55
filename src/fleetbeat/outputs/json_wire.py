"""JSON encoder: wire format v1, the collector's format and the default.

```toml
[[outputs.udp]]
format = "json"
```
"""

from __future__ import annotations

import json
from typing import Any, Callable

from fleetbeat import wire
from fleetbeat.outputs.base import Identity, Outgoing

_SEQ_DIGITS = 20  # a 64-bit seq: room reserved before the seq is drawn


class JsonEncoder:
    """Encodes messages as wire v1; splits readings that exceed the limit."""

    def __init__(self, identity: Identity, options: Any = None) -> None:
        self.identity = identity
        dev = json.dumps(identity.dev, ensure_ascii=False)
        # Everything before the seq is fixed for the life of the agent: build it once.
        self._prefix = {
            kind: f'{{"v":{wire.VERSION},"k":"{kind}","dev":{dev},"run":"{identity.run}","seq":'
            for kind in wire.KINDS
        }

    def encode(
        self, msg: Outgoing, next_seq: Callable[[], int], limit: int
    ) -> tuple[list[bytes], int]:
        if msg.kind == "rd":
            return self._readings(msg, next_seq, limit)
        body: dict[str, Any] = {"ts": round(msg.ts, 3)}
        if msg.kind == "hb":
            ident = self.identity
            body["int"] = msg.interval
            body["bt"] = ident.boot_time
            body["ver"] = ident.version
            body["drop"] = msg.drop
            if msg.drop_by:
                body["drop_by"] = msg.drop_by
            if msg.errors:
                body["err"] = msg.errors
            if ident.tags:
                body["tags"] = ident.tags
            body["m"] = msg.metrics
        payload = self._fit(msg.kind, body, next_seq, limit)
        if payload is None and msg.kind == "hb":
            # metrics and errors are extras: never lose the heartbeat itself for them
            body["m"] = {}
            body.pop("err", None)
            payload = self._fit(msg.kind, body, next_seq, limit)
        return ([payload], 0) if payload is not None else ([], 1)

    def _fit(
        self, kind: str, body: dict[str, Any], next_seq: Callable[[], int], limit: int
    ) -> bytes | None:
        prefix = self._prefix[kind]
        rest = wire.dumps(body)  # b'{...}': its brace is replaced by the prefix
        if len(prefix) + _SEQ_DIGITS + len(rest) > limit:
            return None
        return f"{prefix}{next_seq()},".encode() + rest[1:]

    def _readings(
        self, msg: Outgoing, next_seq: Callable[[], int], limit: int
    ) -> tuple[list[bytes], int]:
        base: dict[str, Any] = {"ts": round(msg.ts, 3), "src": msg.src}
        if msg.rate < 1.0:
            base["rate"] = msg.rate
        payloads: list[bytes] = []
        too_large = 0
        pending = [list(msg.metrics.items())]
        while pending:
            items = pending.pop()
            payload = self._fit("rd", {**base, "m": dict(items)}, next_seq, limit)
            if payload is not None:
                payloads.append(payload)
            elif len(items) <= 1:
                too_large += 1
            else:
                half = len(items) // 2
                pending.append(items[half:])  # popped second: metrics keep their order
                pending.append(items[:half])
        return payloads, too_large
