"""Read a TOML file into a dict, turning every failure into a ConfigError."""

from __future__ import annotations

import sys
from typing import Any

from fleetbeat.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Raspberry Pi OS Bullseye (3.9)
    import tomli as tomllib


MAX_DEPTH = 32
"""Arrays and tables nested deeper than this are a config error: no fleetbeat key needs
more than three levels, and the TOML parser itself recurses (a RecursionError past ~400)."""


def read_toml(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            data: dict[str, Any] = tomllib.load(f)
        return _shallow(data, path)
    except FileNotFoundError:
        raise ConfigError([f"{path}: file not found"]) from None
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: invalid TOML: {exc}"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: invalid TOML: not UTF-8 ({exc.reason})"]) from None
    except RecursionError:
        raise ConfigError([f"{path}: invalid TOML: {_TOO_DEEP}"]) from None


def parse_toml(text: str, source: str = "<string>") -> dict[str, Any]:
    try:
        data: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{source}: invalid TOML: {exc}"]) from None
    except RecursionError:
        raise ConfigError([f"{source}: invalid TOML: {_TOO_DEEP}"]) from None
    return _shallow(data, source)


_TOO_DEEP = f"arrays or tables nested more than {MAX_DEPTH} deep"


def _shallow(data: dict[str, Any], source: str) -> dict[str, Any]:
    """`data` itself, or a ConfigError naming the first key nested past MAX_DEPTH."""
    stack: list[tuple[Any, str, int]] = [(data, "", 0)]
    while stack:  # iterative: the check must not recurse where the parser could not
        value, path, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ConfigError([f"{source}: {path or '<top>'}: {_TOO_DEEP}"])
        if isinstance(value, dict):
            stack.extend(
                (v, f"{path}.{k}" if path else str(k), depth + 1) for k, v in value.items()
            )
        elif isinstance(value, list):
            stack.extend((v, f"{path}[{i}]", depth + 1) for i, v in enumerate(value))
    return data
