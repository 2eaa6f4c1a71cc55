"""A small declarative validator: TOML tables -> frozen dataclasses, every problem at once.

Each config dataclass declares its keys with `option(default, parser)`. `load_table`
checks a TOML table against it: unknown keys (with the closest valid key suggested),
wrong types and out-of-range values all become lines in one `Problems` list, each
naming the file, the key path, what was expected and what was found.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, Callable, TypeVar

from fleetbeat.config import frozen as dataclasses

T = TypeVar("T")

MAX_DURATION = 366 * 86400.0
"""The longest duration any key accepts unless it says otherwise: a year. Longer values
pass nothing useful and overflow the C timeouts they end up in (threading, select)."""
MAX_INTEGER = 2**31 - 1
"""The largest integer any key accepts unless it says otherwise: what a C int (a socket
option, a buffer size) can hold, so a value that passed check-config never fails at start."""


class _Invalid:
    def __repr__(self) -> str:
        return "INVALID"


INVALID: Any = _Invalid()
"""Returned by a parser after it recorded a problem; the field keeps its default."""

Parser = Callable[[Any, str, "Problems"], Any]


class Problems:
    """Collects the problems of one config source."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.items: list[str] = []

    def add(self, path: str, message: str) -> None:
        self.items.append(f"{self.source}: {path}: {message}")

    def expected(self, path: str, expected: str, found: Any) -> Any:
        self.add(path, f"expected {expected}, got {describe(found)}")
        return INVALID

    def __bool__(self) -> bool:
        return bool(self.items)


def describe(value: Any) -> str:
    """How a found value is shown in an error: TOML-ish, short."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + (value if len(value) <= 40 else value[:37] + "...") + '"'
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return repr(value)


def option(default: Any, parse: Parser, *, secret: bool = False, key: str = "") -> Any:
    """Declare a config key: its default and the parser that validates it.

    `key`: the TOML key when it cannot be the field's name (`for`, a Python keyword).
    """
    meta = {"parse": parse, "secret": secret, "key": key}
    if isinstance(default, (list, dict)):
        raise TypeError("use a tuple or a mapping factory for mutable defaults")
    return dataclasses.field(default=default, metadata=meta)


def option_factory(factory: Callable[[], Any], parse: Parser) -> Any:
    """Declare a key whose default is built per instance (nested tables, mappings)."""
    return dataclasses.field(default_factory=factory, metadata={"parse": parse, "secret": False})


def did_you_mean(word: str, valid: Sequence[str]) -> str:
    """'; did you mean "x"?' for the closest valid word, or "" when none is close."""
    import difflib  # only on the error path: it costs memory on a Pi Zero

    close = difflib.get_close_matches(word, list(valid), n=1, cutoff=0.6)
    return f'; did you mean "{close[0]}"?' if close else ""


def suggest(key: str, valid: Sequence[str]) -> str:
    """The closest valid key, or else the list of valid keys."""
    return did_you_mean(key, valid) or "; valid keys: " + ", ".join(sorted(valid))


def load_table(
    cls: type[T], table: Any, path: str, problems: Problems, *, also: Sequence[str] = ()
) -> T:
    """Validate `table` against the dataclass `cls`; problems go to `problems`.

    `also`: keys of the same table that the caller parses itself (suggested for typos).
    """
    if not isinstance(table, Mapping):
        problems.expected(path, "a table", table)
        table = {}
    fields = {f.metadata.get("key") or f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, value in table.items():
        key_path = f"{path}.{key}" if path else key
        f = fields.get(key)
        if f is None or "parse" not in f.metadata:
            valid = [n for n, fl in fields.items() if "parse" in fl.metadata] + list(also)
            problems.add(key_path, "unknown key" + suggest(key, valid))
            continue
        parsed = f.metadata["parse"](value, key_path, problems)
        if parsed is not INVALID:
            kwargs[f.name] = parsed
    obj = cls(**kwargs)
    check = getattr(obj, "check", None)
    if check is not None:
        check(path, problems)
    return obj


# --- parsers ---------------------------------------------------------------------


def integer(*, min: int | None = None, max: int = MAX_INTEGER) -> Parser:
    """An integer, at most `max` (MAX_INTEGER unless given)."""

    def parse(value: Any, path: str, problems: Problems) -> Any:
        expected = _range("an integer", min, max)
        if isinstance(value, bool) or not isinstance(value, int):
            return problems.expected(path, expected, value)
        if (min is not None and value < min) or value > max:
            return problems.expected(path, expected, value)
        return value

    return parse


def number(
    *, min: float | None = None, max: float | None = None, above: float | None = None
) -> Parser:
    """A finite int or float; `above` is an exclusive lower bound."""

    def parse(value: Any, path: str, problems: Problems) -> Any:
        low = f"above {above:g}" if above is not None else None
        expected = _range("a number", min, max, low)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return problems.expected(path, expected, value)
        bad = not math.isfinite(value)
        bad |= min is not None and value < min
        bad |= max is not None and value > max
        bad |= above is not None and value <= above
        if bad:
            return problems.expected(path, expected, value)
        return float(value)

    return parse


_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: Any) -> float | None:
    """Seconds from "250ms", "10s", "5m", "1h", "1d" or a number of seconds; None if invalid."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            return float(m.group(1)) * _UNITS[m.group(2)]
    return None


def duration(*, min: float = 0.0, allow_zero: bool = False, max: float = MAX_DURATION) -> Parser:
    """A duration in seconds; positive unless `allow_zero`; at most `max` (a year unless given)."""

    def parse(value: Any, path: str, problems: Problems) -> Any:
        seconds = parse_duration(value)
        expected = 'a duration such as "250ms", "10s", "5m", "1h" or a number of seconds'
        if seconds is None:
            return problems.expected(path, expected, value)
        if seconds < 0 or (seconds == 0 and not allow_zero) or seconds < min:
            floor = f"at least {_fmt(min)} s" if min > 0 else "greater than zero"
            if allow_zero and min == 0:
                floor = "zero or more"
            return problems.expected(path, f"a duration {floor}", value)
        if seconds > max:
            return problems.expected(path, f"a duration of at most {_fmt(max)} s", value)
        return seconds

    return parse


def string(
    *,
    choices: tuple[str, ...] | None = None,
    pattern: str | None = None,
    what: str = "a string",
    allow_empty: bool = False,
) -> Parser:
    regex = re.compile(pattern) if pattern else None

    def parse(value: Any, path: str, problems: Problems) -> Any:
        if not isinstance(value, str):
            return problems.expected(path, what, value)
        if choices is not None and value not in choices:
            names = ", ".join(f'"{c}"' for c in choices)
            hint = did_you_mean(value, choices)
            problems.add(path, f"expected one of {names}, got {describe(value)}{hint}")
            return INVALID
        if not value and not allow_empty:
            return problems.expected(path, f"{what}, not empty", value)
        if regex is not None and not regex.fullmatch(value):
            return problems.expected(path, what, value)
        return value

    return parse


def boolean() -> Parser:
    def parse(value: Any, path: str, problems: Problems) -> Any:
        if not isinstance(value, bool):
            return problems.expected(path, "true or false", value)
        return value

    return parse


def array(item: Parser, *, min_len: int = 0) -> Parser:
    """A TOML array, each element checked by `item`; becomes a tuple."""

    def parse(value: Any, path: str, problems: Problems) -> Any:
        if not isinstance(value, list):
            return problems.expected(path, "an array", value)
        if len(value) < min_len:
            return problems.expected(path, f"an array of at least {min_len} items", value)
        out = [item(v, f"{path}[{i}]", problems) for i, v in enumerate(value)]
        if any(v is INVALID for v in out):
            return INVALID
        return tuple(out)

    return parse


def mapping(value_parser: Parser, *, key_pattern: str | None = None, what: str = "") -> Parser:
    """A TOML table of free keys; becomes a dict."""
    key_re = re.compile(key_pattern) if key_pattern else None

    def parse(value: Any, path: str, problems: Problems) -> Any:
        if not isinstance(value, Mapping):
            return problems.expected(path, "a table", value)
        out: dict[str, Any] = {}
        ok = True
        for k, v in value.items():
            if key_re is not None and not key_re.fullmatch(k):
                problems.expected(f"{path}.{k}", f"a key of {what or key_pattern}", k)
                ok = False
                continue
            parsed = value_parser(v, f"{path}.{k}", problems)
            ok &= parsed is not INVALID
            out[k] = parsed
        return out if ok else INVALID

    return parse


def table(cls: type[Any]) -> Parser:
    """A nested table validated against another config dataclass."""

    def parse(value: Any, path: str, problems: Problems) -> Any:
        return load_table(cls, value, path, problems)

    return parse


def scalar_text(*, max_len: int | None = None) -> Parser:
    """A tag value: strings, and numbers or booleans written without quotes."""

    def parse(value: Any, path: str, problems: Problems) -> Any:
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, (str, int, float)):
            text = str(value)
        else:
            return problems.expected(path, "a string", value)
        if max_len is not None and len(text) > max_len:
            return problems.expected(path, f"a string of at most {max_len} characters", value)
        return text

    return parse


def text_encoding() -> Parser:
    """The name of a text codec (utf-8, latin-1...); rot13 or base64 are not text encodings."""

    def parse(value: Any, path: str, problems: Problems) -> Any:
        if not isinstance(value, str) or not value:
            return problems.expected(path, "a text encoding such as utf-8 or latin-1", value)
        try:
            b"a".decode(value)  # LookupError for unknown names and for bytes-to-bytes codecs
        except LookupError:
            problems.add(
                path, f"unknown text encoding {describe(value)}; use e.g. utf-8 or latin-1"
            )
            return INVALID
        except UnicodeError:
            pass  # a real text encoding that wants more than one byte (utf-16)
        return value

    return parse


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _range(kind: str, low: float | None, high: float | None, low_text: str | None = None) -> str:
    if low_text:
        return f"{kind} {low_text}" + (f" and at most {_fmt(high)}" if high is not None else "")
    if low is not None and high is not None:
        return f"{kind} from {_fmt(low)} to {_fmt(high)}"
    if low is not None:
        return f"{kind} of at least {_fmt(low)}"
    if high is not None:
        return f"{kind} of at most {_fmt(high)}"
    return kind
