"""Who may speak for a device: signing keys, and the API token for writes.

`Keyring` holds the collector's keys (`[collector.auth]`): one file per device id in
`keys_dir` (per-device keys: a stolen Pi can speak only for itself), and/or one
`fleet_key_file` for every device (simpler, weaker); a device's own key wins. It is
read at start and again on SIGHUP, so adding a device needs no restart. A file that
is not a key is logged (by name, never by content) and skipped; the keys read before
stay in force for that device.

`ApiToken` is the bearer token every state-changing HTTP request must carry: the
file `api_token_file`, created at first start (mode 0600, 256 random bits) when it
does not exist, so `fleetbeat` commands on the same machine can read it.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
from typing import Any, Optional

from fleetbeat import keys, wire
from fleetbeat.errors import FleetbeatError
from fleetbeat.hmac_sha256 import HmacSha256
from fleetbeat.wire import DEVICE_ID

log = logging.getLogger(__name__)

MAX_KEYS = 1_000_000  # files read from keys_dir at most: a directory is not a database


class Keyring:
    """Device id -> HMAC key state, from `keys_dir` and `fleet_key_file`."""

    def __init__(self, *, keys_dir: str = "", fleet_key_file: str = "",
                 require_signed: bool = False) -> None:  # fmt: skip
        self.keys_dir = keys_dir
        self.fleet_key_file = fleet_key_file
        self.require_signed = require_signed
        self._devices: dict[str, HmacSha256] = {}
        self._fleet: Optional[HmacSha256] = None

    @property
    def enabled(self) -> bool:
        """True when any key is configured or signatures are required."""
        return bool(self._devices or self._fleet or self.require_signed)

    def mac(self, dev: str) -> Optional[HmacSha256]:
        """The key state for `dev`: its own key, else the fleet key, else None."""
        return self._devices.get(dev, self._fleet)

    def __len__(self) -> int:
        return len(self._devices)

    def open(self, data: bytes, max_size: int) -> tuple[dict[str, Any], bool]:
        """Parse and verify one message: (its fields, whether it was signed).

        Raises WireError with the reason (a wire one, or unsigned, bad_signature,
        unknown_key). The signature covers the message without its `sig` member, which
        is what gets parsed.
        """
        if len(data) > max_size:
            raise wire.WireError("oversize", f"{len(data)} bytes")
        body, tag = wire.split_signed(data)
        msg = wire.parse_fields(body, max_size=max_size)
        refused, signed = self.verify(msg["dev"], body, tag)
        if refused is not None:
            raise wire.WireError(refused)
        return msg, signed

    def verify(self, dev: str, body: bytes, tag: Optional[bytes]) -> tuple[Optional[str], bool]:
        """(rejection reason or None, signed): may `dev` say `body`, signed with `tag`?

        A device whose key is known must sign; with `require_signed` every device must.
        A signature the collector has no key for proves nothing: without
        `require_signed` such a message counts as unsigned.
        """
        mac = self.mac(dev)
        if tag is None:
            return ("unsigned", False) if mac is not None or self.require_signed else (None, False)
        if mac is None:
            return ("unknown_key", False) if self.require_signed else (None, False)
        if not wire.tag_matches(body, tag, mac):
            return "bad_signature", False
        return None, True

    def load(self) -> None:
        """(Re)read every key; a bad file is logged and leaves that device's old key."""
        if self.fleet_key_file:
            try:
                self._fleet = HmacSha256(keys.read_key_file(self.fleet_key_file))
            except keys.KeyFileError as err:
                if self._fleet is None:
                    raise AuthError(f"collector.auth.fleet_key_file: {err}") from None
                log.error("keeping the fleet key read before: %s", err)
        if not self.keys_dir:
            return
        try:
            names = sorted(os.listdir(self.keys_dir))[:MAX_KEYS]
        except OSError as exc:
            if not self._devices:
                raise AuthError(f"collector.auth.keys_dir: {self.keys_dir}: "
                                f"{exc.strerror or exc}") from None  # fmt: skip
            log.error("cannot list %s (%s): keeping the %d device keys read before",
                      self.keys_dir, exc.strerror or exc, len(self._devices))  # fmt: skip
            return
        found: dict[str, HmacSha256] = {}
        for name in names:
            if name.startswith("."):
                continue
            if not DEVICE_ID.fullmatch(name):
                log.warning("%s: %r is not a device id: skipped", self.keys_dir, name)
                continue
            try:
                found[name] = HmacSha256(keys.read_key_file(os.path.join(self.keys_dir, name)))
            except keys.KeyFileError as err:
                log.error("%s", err)
                old = self._devices.get(name)
                if old is not None:
                    found[name] = old
        added = len(found.keys() - self._devices.keys())
        removed = len(self._devices.keys() - found.keys())
        self._devices = found
        log.info("signing keys: %d devices in %s (+%d, -%d)%s%s", len(found), self.keys_dir,
                 added, removed, ", a fleet key" if self._fleet else "",
                 ", signatures required" if self.require_signed else "")  # fmt: skip


class AuthError(FleetbeatError):
    """The keys or the API token cannot be used."""


class ApiToken:
    """The bearer token for writes: read from `path`, created there when missing."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._token = self._read_or_create()

    def _read_or_create(self) -> bytes:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        except OSError as exc:
            raise AuthError(f"cannot create the API token {self.path}: "
                            f"{exc.strerror or exc}") from None  # fmt: skip
        else:
            try:
                os.write(fd, secrets.token_urlsafe(32).encode() + b"\n")
            finally:
                os.close(fd)
            log.info("created the API token %s (mode 0600): writes to the API need it", self.path)
        return read_token(self.path).encode()

    def accepts(self, authorization: Optional[str]) -> bool:
        """True for `Bearer <token>` with this token (compared in constant time)."""
        if not authorization:
            return False
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(value.strip().encode(), self._token)


def read_token(path: str) -> str:
    """The token in `path` (one line); AuthError naming the file when it cannot be read."""
    try:
        with open(path, "rb") as f:
            text = f.read(4097).strip()
    except OSError as exc:
        raise AuthError(f"cannot read the API token {path}: {exc.strerror or exc}") from None
    if not 16 <= len(text) <= 4096 or not text.isascii() or b" " in text:
        raise AuthError(f"{path}: not an API token (one line of 16 to 4096 characters)")
    return text.decode()
