"""Signing primitives: HMAC-SHA256 without OpenSSL, the `sig` member, key files, the keyring."""

from __future__ import annotations

import hmac
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleetbeat import keys, wire
from fleetbeat.collector.auth import ApiToken, AuthError, Keyring
from fleetbeat.hmac_sha256 import HmacSha256
from helpers import subprocess_env


@given(key=st.binary(min_size=0, max_size=200), data=st.binary(max_size=2000))
def test_hmac_matches_the_standard_library(key: bytes, data: bytes) -> None:
    """Our HMAC-SHA256 gives the standard library's tag for every key length and message."""
    assert HmacSha256(key).digest(data) == hmac.digest(key, data, "sha256")


def test_rfc4231_test_case_2() -> None:
    """RFC 4231's second test vector ("Jefe"), byte for byte."""
    mac = HmacSha256(b"Jefe").digest(b"what do ya want for nothing?")
    assert mac.hex() == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"


def test_the_key_never_shows_in_a_repr() -> None:
    """A key state printed in a log line or a traceback shows no key material."""
    assert "hidden" in repr(HmacSha256(b"secret-key-material"))


def test_signing_loads_no_openssl() -> None:
    """An agent that signs imports neither hashlib's OpenSSL module nor ssl."""
    code = (
        "import sys; from fleetbeat import wire; from fleetbeat.hmac_sha256 import HmacSha256;"
        "wire.sign(b'{\"v\":1}', HmacSha256(b'k' * 32));"
        "print(sorted(m for m in ('_hashlib', '_ssl', 'ssl', 'hashlib', 'hmac') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True,
        env=subprocess_env(),
    ).stdout.strip()  # fmt: skip
    assert out == "[]"


MAC = HmacSha256(bytes(range(32)))
BODY = wire.dumps({"v": 1, "k": "hb", "dev": "pi-1", "run": "0" * 16, "seq": 7, "ts": 1.5,
                   "int": 10, "m": {"temp": 48.5}})  # fmt: skip


def test_a_signed_message_is_the_body_plus_a_last_sig_member() -> None:
    """`sig` is the last member, 22 base64url characters, and the rest is the body as sent."""
    signed = wire.sign(BODY, MAC)
    assert signed.startswith(BODY[:-1]) and signed.endswith(b'"}')
    obj = wire.json.loads(signed)
    assert list(obj)[-1] == "sig" and len(obj["sig"]) == 22
    assert set(obj["sig"]) <= set(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    )
    body, tag = wire.split_signed(signed)
    assert body == BODY and tag is not None and wire.tag_matches(body, tag, MAC)


def test_the_tag_is_the_first_16_bytes_of_the_hmac() -> None:
    """DESIGN.md's contract: base64url of HMAC-SHA256(key, body)[:16], unpadded."""
    import base64

    expected = base64.urlsafe_b64encode(hmac.digest(bytes(range(32)), BODY, "sha256")[:16])
    assert wire.signature(BODY, MAC) == expected.rstrip(b"=")


def test_an_unsigned_message_splits_to_itself() -> None:
    """A message without the member is unsigned (no tag), whatever else it holds."""
    assert wire.split_signed(BODY) == (BODY, None)
    assert wire.split_signed(b'{"sig":"x"}')[1] is None


@given(st.data())
def test_any_single_bit_change_is_rejected(data: st.DataObject) -> None:
    """Flipping any one bit of a signed message makes it unsigned or fail verification."""
    signed = wire.sign(BODY, MAC)
    i = data.draw(st.integers(0, len(signed) * 8 - 1))
    changed = bytearray(signed)
    changed[i // 8] ^= 1 << (i % 8)
    body, tag = wire.split_signed(bytes(changed))
    assert tag is None or not wire.tag_matches(body, tag, MAC)


def test_another_key_does_not_verify() -> None:
    """A tag made with one device's key fails with another's."""
    body, tag = wire.split_signed(wire.sign(BODY, MAC))
    assert tag is not None and not wire.tag_matches(body, tag, HmacSha256(b"other" * 8))


# --- key files ------------------------------------------------------------------------


def test_key_files_are_written_0600_and_read_back(tmp_path: Path) -> None:
    """keygen's file is 64 hex digits and a newline, mode 0600, and reads as 32 bytes."""
    path = tmp_path / "k"
    hexkey = keys.new_key()
    keys.write_key_file(str(path), hexkey)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == hexkey + "\n"
    assert keys.read_key_file(str(path)) == bytes.fromhex(hexkey)


def test_an_existing_key_file_is_not_overwritten(tmp_path: Path) -> None:
    """Writing over a key by accident would lock a device out: refused unless asked for."""
    path = tmp_path / "k"
    keys.write_key_file(str(path), keys.new_key())
    with pytest.raises(keys.KeyFileError, match="exists"):
        keys.write_key_file(str(path), keys.new_key())
    os.chmod(path, 0o644)
    keys.write_key_file(str(path), "ab" * 32, overwrite=True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize("content", [b"", b"abc\n", b"zz" * 32, b"ab" * 33, b"\xff" * 64])
def test_a_file_that_is_not_a_key_names_the_file_not_the_content(
    tmp_path: Path, content: bytes
) -> None:
    """A bad key file is an error with its path; its bytes never appear in the message."""
    path = tmp_path / "k"
    path.write_bytes(content)
    with pytest.raises(keys.KeyFileError) as err:
        keys.read_key_file(str(path))
    assert str(path) in str(err.value)
    if len(content) > 4:
        assert content.decode("latin-1") not in str(err.value)


# --- the collector's keyring --------------------------------------------------------


def _keyfile(path: Path, key: bytes) -> None:
    path.write_text(key.hex() + "\n")


def test_a_device_key_wins_over_the_fleet_key(tmp_path: Path) -> None:
    """pi-1 has its own key; every other device falls back to the fleet key."""
    (tmp_path / "keys").mkdir()
    _keyfile(tmp_path / "keys" / "pi-1", b"1" * 32)
    _keyfile(tmp_path / "fleet", b"f" * 32)
    ring = Keyring(keys_dir=str(tmp_path / "keys"), fleet_key_file=str(tmp_path / "fleet"))
    ring.load()
    own, fleet = ring.mac("pi-1"), ring.mac("pi-2")
    assert own is not None and fleet is not None
    assert own.digest(b"x") == hmac.digest(b"1" * 32, b"x", "sha256")
    assert fleet.digest(b"x") == hmac.digest(b"f" * 32, b"x", "sha256")


def test_reloading_adds_a_device_and_keeps_a_good_key_over_a_broken_file(tmp_path: Path) -> None:
    """A new file is picked up by load(); a file broken later leaves the old key in force."""
    d = tmp_path / "keys"
    d.mkdir()
    _keyfile(d / "pi-1", b"1" * 32)
    (d / "not an id!").write_text("x")
    (d / ".hidden").write_text("x")
    ring = Keyring(keys_dir=str(d))
    ring.load()
    assert len(ring) == 1 and ring.mac("pi-2") is None
    _keyfile(d / "pi-2", b"2" * 32)
    (d / "pi-1").write_text("broken")
    ring.load()
    assert len(ring) == 2
    pi1 = ring.mac("pi-1")
    assert pi1 is not None and pi1.digest(b"x") == hmac.digest(b"1" * 32, b"x", "sha256")


def test_a_missing_fleet_key_at_start_is_an_error_naming_the_key(tmp_path: Path) -> None:
    """The collector does not start believing unsigned messages when its key is missing."""
    ring = Keyring(fleet_key_file=str(tmp_path / "nope"))
    with pytest.raises(AuthError, match="fleet_key_file"):
        ring.load()


# --- the API token --------------------------------------------------------------------


def test_the_api_token_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    """The first start writes a random token; later starts read the same one."""
    path = tmp_path / "api-token"
    first = ApiToken(str(path))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    token = path.read_text().strip()
    assert len(token) >= 32
    again = ApiToken(str(path))
    assert first.accepts(f"Bearer {token}") and again.accepts(f"bearer {token}")


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer wrong", "Basic abc", "token"])
def test_only_the_right_bearer_token_is_accepted(tmp_path: Path, header: str) -> None:
    """No header, another scheme or another token: refused."""
    assert not ApiToken(str(tmp_path / "t")).accepts(header)
