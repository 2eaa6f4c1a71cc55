"""`fleetbeat alerts` and `fleetbeat silence`: real CLI subprocesses against a served fleet."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from web import Served

from helpers import free_port, run_cli


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    s = Served(tmp_path)
    yield s
    s.close()


def test_a_silence_is_added_listed_and_removed_from_the_command_line(
    served: Served, tmp_path: Path
) -> None:
    """`silence add` prints an id, `silence list` shows its match and comment, `rm` removes it."""
    token = str(tmp_path / "api-token")
    added = run_cli("silence", "add", "--tag", "site:barn", "--duration", "2h", "--comment",
                    "rewiring", "--url", served.url, "--token-file", token)  # fmt: skip
    assert added.returncode == 0, added.stderr
    ident = added.stdout.strip()
    listed = run_cli("silence", "list", "--url", served.url)
    assert listed.returncode == 0
    (row,) = [line for line in listed.stdout.splitlines() if line.startswith(ident)]
    assert "tag=site:barn" in row and "in 2 h" in row and row.endswith("rewiring")
    removed = run_cli("silence", "rm", ident, "--url", served.url, "--token-file", token)
    assert removed.returncode == 0 and f"removed {ident}" in removed.stdout
    assert "no silences" in run_cli("silence", "list", "--url", served.url).stdout


def test_the_token_comes_from_the_collector_config_given_with_c(
    served: Served, tmp_path: Path
) -> None:
    """-c FILE: the token is read from that config's state_dir, as the collector made it."""
    config = tmp_path / "collector.toml"
    config.write_text(f'[collector]\nstate_dir = "{tmp_path}"\n')
    added = run_cli("silence", "add", "--device", "pi-1", "--duration", "1h", "--url",
                    served.url, "-c", str(config))  # fmt: skip
    assert added.returncode == 0, added.stderr


def test_refusals_are_reported_with_the_collectors_reason(served: Served, tmp_path: Path) -> None:
    """A wrong token, a bad silence and an unknown id exit 1 with what the collector said."""
    wrong = tmp_path / "wrong-token"
    wrong.write_text("x" * 43 + "\n")
    refused = run_cli("silence", "add", "--device", "pi-1", "--duration", "1h", "--url",
                      served.url, "--token-file", str(wrong))  # fmt: skip
    assert refused.returncode == 1 and "HTTP 401: missing or wrong API token" in refused.stderr
    token = str(tmp_path / "api-token")
    bad = run_cli("silence", "add", "--device", "pi-1", "--duration", "soon", "--url",
                  served.url, "--token-file", token)  # fmt: skip
    assert bad.returncode == 1 and "HTTP 400" in bad.stderr and "duration" in bad.stderr
    gone = run_cli("silence", "rm", "0123456789abcdef", "--url", served.url, "--token-file", token)
    assert gone.returncode == 1 and "HTTP 404: no such silence" in gone.stderr


def test_a_token_file_that_cannot_be_read_is_named(served: Served, tmp_path: Path) -> None:
    """Without a readable token the command says which file it tried and exits 1."""
    missing = tmp_path / "nope" / "api-token"
    done = run_cli("silence", "add", "--device", "pi-1", "--duration", "1h", "--url", served.url,
                   "--token-file", str(missing))  # fmt: skip
    assert done.returncode == 1 and str(missing) in done.stderr


def test_alerts_without_any_exits_0_and_an_unreachable_collector_exits_3(served: Served) -> None:
    """`fleetbeat alerts`: 0 and "no active alerts" on a quiet fleet; 3 when nobody answers."""
    quiet = run_cli("alerts", "--url", served.url)
    assert quiet.returncode == 0 and "no active alerts" in quiet.stdout
    port = free_port(socket.SOCK_STREAM)
    gone = run_cli("alerts", "--url", f"http://127.0.0.1:{port}", "--timeout", "2")
    assert gone.returncode == 3 and "Is `fleetbeat collector` running there?" in gone.stderr


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (("alerts", "--help"), "Exit status: 0 when no alert fires unsuppressed"),
        (("silence", "--help"), "rm remove silences by id"),
        (("silence", "add", "--help"), "--token-file"),
        (("silence", "rm", "--help"), "ids `silence add` printed"),
    ],
)
def test_every_alert_command_explains_itself(argv: tuple[str, ...], words: str) -> None:
    """--help on each alert command exits 0 and says what it does."""
    done = run_cli(*argv)
    assert done.returncode == 0 and words in " ".join(done.stdout.split()), done.stdout
