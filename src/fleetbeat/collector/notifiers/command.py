"""Command notifier: runs a program with the notification's JSON on its stdin.

```toml
[[collector.notify]]
type = "command"
argv = ["/usr/local/bin/page-oncall", "--team", "fleet"]
timeout = "10s"
```

The payload is the webhook's (`fleetbeat.collector.notifiers.webhook`); the environment
also carries `FLEETBEAT_SUMMARY` (the one-line summary) and `FLEETBEAT_STATUS` ("firing"
or "resolved"). Exit status 0 is success; anything else, a program that cannot be started,
or one still running after `timeout` (its whole process group is killed) is retried.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from typing import ClassVar

from fleetbeat.collector.grouping import Notification
from fleetbeat.collector.notifiers.base import SENT, NotifierConfig, Outcome, failed
from fleetbeat.config.frozen import dataclass
from fleetbeat.config.schema import array, option, string


@dataclass(frozen=True)
class CommandConfig(NotifierConfig):
    REQUIRED: ClassVar[tuple[str, ...]] = ("argv",)

    argv: tuple[str, ...] = option((), array(string(what="a program or argument"), min_len=1))


class CommandNotifier:
    Config = CommandConfig

    def __init__(self, config: CommandConfig) -> None:
        self.config = config

    def send(self, notification: Notification) -> Outcome:
        argv = list(self.config.argv)
        env = dict(os.environ, FLEETBEAT_SUMMARY=notification.summary,
                   FLEETBEAT_STATUS=notification.status)  # fmt: skip
        payload = json.dumps(notification.to_json()).encode()
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, env=env,
                                    start_new_session=True)  # fmt: skip
        except OSError as exc:
            return failed(f"command {argv[0]}: {exc}")
        try:
            _, err = proc.communicate(payload, timeout=self.config.timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            return failed(f"command {argv[0]}: still running after {self.config.timeout:g} s")
        if proc.returncode == 0:
            return SENT
        tail = err.decode(errors="replace").strip().splitlines()[-1:] if err else []
        return failed(f"command {argv[0]}: exit status {proc.returncode}" +
                      (f": {tail[0][:200]}" if tail else ""))  # fmt: skip


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    # Its children too: a grandchild holding the pipes open would keep communicate() waiting.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        proc.kill()
    proc.communicate()
