"""Print an effective config back as TOML, secrets masked."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from fleetbeat.config import frozen as dataclasses

MASK = "********"


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, (tuple, list)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, Mapping):
        return "{ " + ", ".join(f"{_key(k)} = {_value(x)}" for k, x in v.items()) + " }"
    return json.dumps(str(v))


def _key(k: str) -> str:
    return k if k.replace("_", "a").replace("-", "a").isalnum() else json.dumps(k)


def table_lines(header: str, obj: Any) -> list[str]:
    """`[header]` then one line per key; nested dataclasses become sub-tables."""
    lines = [header]
    subtables: list[tuple[str, Any]] = []
    for f in dataclasses.fields(obj):
        if "parse" not in f.metadata:
            continue
        key = f.metadata.get("key") or f.name
        v = getattr(obj, f.name)
        if dataclasses.is_dataclass(v):
            subtables.append((f"[{key}]", v))
        elif isinstance(v, tuple) and v and all(dataclasses.is_dataclass(x) for x in v):
            subtables += [(f"[[{key}]]", x) for x in v]  # an array of tables
        elif v is None:
            lines.append(f"# {key} is not set")
        elif f.metadata.get("secret"):
            lines.append(f"{key} = {_value(MASK)}")
        else:
            lines.append(f"{key} = {_value(v)}")
    name = header.strip("[]")
    for sub, v in subtables:
        brackets = sub.count("[")
        lines += [
            "",
            *table_lines("[" * brackets + f"{name}.{sub.strip('[]')}" + "]" * brackets, v),
        ]
    return lines
