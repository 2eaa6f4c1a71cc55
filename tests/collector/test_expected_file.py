"""The expected_devices file: what a line may say, and every way a file can be wrong
(named with its line number), including the hostile ones: huge, a million lines, bytes
that are not text."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from fleetbeat.collector.expected import (
    MAX_FILE_BYTES,
    MAX_PROBLEMS,
    ExpectedError,
    Rereader,
    read_expected,
)
from helpers import run_cli

LIMITS = {"max_devices": 40_000, "max_tags": 16, "max_tag_bytes": 512}


def read(tmp_path: Path, data: bytes, **limits: int) -> dict[str, dict[str, str]]:
    path = tmp_path / "expected"
    path.write_bytes(data)
    found = read_expected(str(path), **{**LIMITS, **limits})
    return {k: dict(v) for k, v in found.items()}


def problems(tmp_path: Path, data: bytes, **limits: int) -> list[str]:
    with pytest.raises(ExpectedError) as err:
        read(tmp_path, data, **limits)
    return [p.replace(str(tmp_path / "expected"), "F") for p in err.value.problems]


def test_ids_tags_comments_and_blank_lines(tmp_path: Path) -> None:
    """Ids with tags after them, comments (whole lines and after an entry), blank lines,
    CRLF line ends, tabs, a byte-order mark, and a value with "=" in it."""
    data = ("\ufeff# the barn\r\npi-barn-01 site=barn room=loft\r\n\n   \n"
            "pi-barn-02\tsite=barn   # spare\npi.3_x-Y url=a=b\n").encode()  # fmt: skip
    assert read(tmp_path, data) == {
        "pi-barn-01": {"site": "barn", "room": "loft"},
        "pi-barn-02": {"site": "barn"},
        "pi.3_x-Y": {"url": "a=b"},
    }


def test_an_empty_file_expects_nothing(tmp_path: Path) -> None:
    """A file of comments only is valid: no device is expected."""
    assert read(tmp_path, b"# nobody yet\n\n") == {}


@pytest.mark.parametrize(
    ("line", "says"),
    [
        (b"pi/1", "'pi/1' is not a device id"),
        (b"x" * 65, "is not a device id (1 to 64 of A-Z a-z 0-9 . _ -)"),
        (b"pi-1 site", "tag 'site': expected KEY=VALUE"),
        (b"pi-1 =barn", "tag '=barn': expected KEY=VALUE"),
        (b"pi-1 site=a site=b", "tag 'site' twice"),
        (b"pi-1 k=" + b"v" * 129, "keys and values are at most 128 characters"),
        (b"pi-1 site=b\x00rn", "a control character"),
        (b"pi-1 site=\x1b[31mred", "a control character"),
        (b"pi-1 site=\xff\xfe", "not UTF-8 text"),
        (b"pi-\xc3\xa9", "is not a device id"),
        (b"pi-1 " + b" ".join(b"k%d=v" % i for i in range(17)), "17 tags, more than max_tags (16)"),
        (b"pi-1 k=" + b"v" * 128 + b" j=" + b"v" * 128 + b" i=" + b"v" * 128,
         "bytes, more than max_tag_bytes (512)"),
        (b"pi-1 " + b"x" * 70_000, "longer than 65536 characters"),
    ],
)  # fmt: skip
def test_a_bad_line_is_named_with_its_number_and_what_is_wrong(
    tmp_path: Path, line: bytes, says: str
) -> None:
    """Each bad line: the file, the line number and the reason, and nothing is taken."""
    (problem,) = problems(tmp_path, b"# fine\npi-ok site=x\n" + line + b"\npi-ok2\n")
    assert problem.startswith("F line 3: "), problem
    assert says in problem


def test_an_id_twice_names_both_lines(tmp_path: Path) -> None:
    """The second line of an id says where the first one is."""
    assert problems(tmp_path, b"a\nb\na site=x\n") == ["F line 3: a is already on line 1"]


def test_many_bad_lines_are_named_up_to_a_limit_then_counted(tmp_path: Path) -> None:
    """Every bad line up to MAX_PROBLEMS is named, then how many more there are."""
    found = problems(tmp_path, b"ok\n" + b"bad/id\n" * 100)
    assert len(found) == MAX_PROBLEMS + 1
    assert found[0] == "F line 2: 'bad/id' is not a device id (1 to 64 of A-Z a-z 0-9 . _ -)"
    assert found[-1] == f"F: {100 - MAX_PROBLEMS} more bad lines"


def test_more_ids_than_max_devices_stops_at_the_first_one_too_many(tmp_path: Path) -> None:
    """A file of a million ids with max_devices 40,000: refused at line 40,001, fast."""
    data = b"".join(b"pi-%d site=s%d\n" % (i, i % 3) for i in range(1_000_000))
    t = time.perf_counter()
    assert problems(tmp_path, data) == ["F line 40001: more than max_devices (40000) devices"]
    assert time.perf_counter() - t < 5.0


def test_a_million_ids_are_read_when_max_devices_allows_them(tmp_path: Path) -> None:
    """A million lines with tags, max_devices 1,000,000: read whole, the three tag sets
    shared (one dict each), within seconds."""
    data = b"".join(b"pi-%d site=s%d\n" % (i, i % 3) for i in range(1_000_000))
    path = tmp_path / "expected"
    path.write_bytes(data)
    t = time.perf_counter()
    found = read_expected(str(path), max_devices=1_000_000, max_tags=16, max_tag_bytes=512)
    took = time.perf_counter() - t
    assert len(found) == 1_000_000 and found["pi-999999"] == {"site": "s0"}
    assert len({id(v) for v in found.values()}) == 3
    assert took < 20.0, took


def test_a_file_past_the_size_cap_is_refused_before_it_is_parsed(tmp_path: Path) -> None:
    """A (sparse) file one byte past MAX_FILE_BYTES: refused as too large, read no further."""
    path = tmp_path / "expected"
    with open(path, "wb") as f:
        f.truncate(MAX_FILE_BYTES + 1)
    with pytest.raises(ExpectedError) as err:
        read_expected(str(path), **LIMITS)
    assert err.value.problems == [f"{path}: larger than 32 MiB"]


def test_a_million_comment_lines_are_read_quickly(tmp_path: Path) -> None:
    """A million lines without an id (comments, blanks) are valid and cost little."""
    t = time.perf_counter()
    assert read(tmp_path, b"# nothing\n\n" * 500_000) == {}
    assert time.perf_counter() - t < 5.0


def test_a_sighup_read_of_a_huge_file_runs_off_the_main_loop(tmp_path: Path) -> None:
    """The SIGHUP re-read (`Rereader.soon`) of a file at the size cap (8 million comment
    lines and one id) returns to the main loop at once; the list is applied when the read
    is done, and the read itself takes seconds, not the 7 s it took line by line."""
    from fleetbeat.collector.config import CollectorSection
    from fleetbeat.collector.fleet import Fleet
    from fleetbeat.config import frozen

    path = tmp_path / "expected"
    path.write_bytes(b"#\n" * ((MAX_FILE_BYTES - 64) // 2) + b"pi-late site=barn\n")
    section = frozen.replace(CollectorSection(), expected_devices=str(path))
    fleet = Fleet(section)
    reread = Rereader(fleet)
    t = time.perf_counter()
    reread.soon(section, "")
    assert time.perf_counter() - t < 0.5  # the main loop goes on: checks, flushes, pings
    reread.wait(60)
    took = time.perf_counter() - t
    d = fleet.device("pi-late")
    assert d is not None and d["state"] == "missing" and d["tags"] == {"site": "barn"}
    assert took < 5.0, took


@pytest.mark.parametrize(
    ("what", "says"),
    [("absent", "No such file"), ("directory", "Is a directory"),
     ("fifo", "not a regular file")],
)  # fmt: skip
def test_a_file_that_cannot_be_read_is_named(tmp_path: Path, what: str, says: str) -> None:
    """A path with no file, a directory, a FIFO nobody writes to (which must not hang the
    collector): the path and the reason."""
    path = tmp_path / "expected"
    if what == "directory":
        path.mkdir()
    elif what == "fifo":
        os.mkfifo(path)
    with pytest.raises(ExpectedError) as err:
        read_expected(str(path), **LIMITS)
    (problem,) = err.value.problems
    assert problem.startswith(f"{path}: ")
    assert says in problem


def test_a_bad_file_at_start_is_a_config_error_naming_the_line(tmp_path: Path) -> None:
    """`fleetbeat collector` with a bad expected_devices line exits 78 (a config error,
    which systemd does not restart) naming the key, the file and the line, before it
    listens or writes anything; `fleetbeat check-config` says the same."""
    expected = tmp_path / "expected"
    expected.write_text("pi-1 site=barn\npi-2 site\n")
    state = tmp_path / "state"
    config = tmp_path / "collector.toml"
    config.write_text(f'[collector]\nudp_listen = "127.0.0.1:0"\nhttp_listen = "127.0.0.1:0"\n'
                      f'state_dir = "{state}"\nexpected_devices = "{expected}"\n')  # fmt: skip
    done = run_cli("collector", "-c", str(config))
    assert done.returncode == 78, done.stderr
    assert f"collector.expected_devices: {expected} line 2: tag 'site': expected KEY=VALUE" in (
        done.stderr
    )
    assert not state.exists()  # nothing started: not even the store
    checked = run_cli("check-config", str(config))
    assert checked.returncode == 78 and "line 2: tag 'site'" in checked.stderr
    expected.write_text("pi-1 site=barn\n")
    assert run_cli("check-config", str(config)).returncode == 0


@pytest.mark.parametrize(
    ("key", "value", "says"),
    [
        ("forget_after", '"30s"', '"0" (never) or a duration of at least 1m'),
        ("forget_after", '"-1d"', "forget_after"),
        ("missing_after", '"soon"', 'a duration such as "250ms"'),
        ("expected_devices", "3", "a file path"),
    ],
)
def test_the_lifecycle_keys_are_checked(tmp_path: Path, key: str, value: str, says: str) -> None:
    """Bad values of the three keys are config errors naming the key."""
    config = tmp_path / "collector.toml"
    config.write_text(f"[collector]\n{key} = {value}\n")
    done = run_cli("check-config", str(config))
    assert done.returncode == 78
    assert f"collector.{key}" in done.stderr and says in done.stderr, done.stderr
