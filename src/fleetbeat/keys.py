"""Signing keys on disk: 64 hex digits on one line, the 32 bytes they encode are the key.

Written by `fleetbeat keygen` with mode 0600; read by the agent (`[agent] key_file` or
the systemd credential `fleetbeat-key`) and by the collector (`[collector.auth]`
`keys_dir`, one file per device id, and `fleet_key_file`). A key is never logged or
printed: errors name the file, never its content.
"""

from __future__ import annotations

import os
import re
from typing import Optional

from fleetbeat.errors import FleetbeatError

KEY_BYTES = 32
CREDENTIAL = "fleetbeat-key"  # systemd LoadCredential= name of the agent's key
_HEX_KEY = re.compile(rb"\s*([0-9a-fA-F]{64})\s*")
MAX_KEY_FILE = 4096  # bytes: anything longer is not a key file


class KeyFileError(FleetbeatError):
    """A key file is missing, unreadable or not a key."""


def read_key_file(path: str) -> bytes:
    """The 32-byte key in `path`; KeyFileError naming the file when it is not one."""
    try:
        with open(path, "rb") as f:
            text = f.read(MAX_KEY_FILE + 1)
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read the key: {exc.strerror or exc}") from None
    m = _HEX_KEY.fullmatch(text)
    if m is None:
        raise KeyFileError(f"{path}: not a fleetbeat key (expected 64 hex digits on one line; "
                        "make one with `fleetbeat keygen`)")  # fmt: skip
    return bytes.fromhex(m.group(1).decode())


def credential_path(name: str = CREDENTIAL) -> Optional[str]:
    """The systemd credential file `name` ($CREDENTIALS_DIRECTORY), when there is one."""
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    if not directory:
        return None
    path = os.path.join(directory, name)
    return path if os.path.isfile(path) else None


def new_key() -> str:
    """A random 256-bit key as 64 hex digits."""
    return os.urandom(KEY_BYTES).hex()  # the kernel's CSPRNG, as secrets uses (not imported:
    # secrets imports hmac, which loads OpenSSL, 3.7 MB the agent does not need)


def write_key_file(path: str, key_hex: str, *, overwrite: bool = False) -> None:
    """Write `key_hex` and a newline to `path` with mode 0600 (never wider, even briefly)."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise KeyFileError(
            f"{path} exists: not overwritten (remove it first, or --force)"
        ) from None
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot write: {exc.strerror or exc}") from None
    try:
        os.fchmod(fd, 0o600)  # O_CREAT's mode does not apply to a file that existed
        os.write(fd, key_hex.encode() + b"\n")
    finally:
        os.close(fd)
