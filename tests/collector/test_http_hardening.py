"""HTTP that a local user cannot take down: real sockets against the real bounded server."""

from __future__ import annotations

import http.client
import json
import resource
import select
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from typing import Any, Callable, Optional

import pytest
from collector_helpers import CollectorProcess
from web import ServedFleet, get

from fleetbeat.collector import http as collector_http
from fleetbeat.collector.httpserver import BoundedServer, Handler, Limits, Request, Response
from helpers import subprocess_env, wait_until

STORE_FULL = "store cannot write: database or disk is full"


@pytest.fixture
def served() -> Iterator[ServedFleet]:
    """One device up, served with the default limits."""
    s = ServedFleet()
    s.hb("kitchen-1", 0, interval=10)
    yield s
    s.close()


def echo_handler(req: Request) -> Response:
    """A handler that answers with what it was sent."""
    return Response(200, json.dumps({"method": req.method, "len": len(req.body)}).encode())


def timed_get(url: str) -> tuple[int, float]:
    """(status, seconds) of one GET on a new connection."""
    t0 = time.monotonic()
    status = get(url)[0]
    return status, time.monotonic() - t0


def assert_answers_fast(url: str) -> None:
    """/healthz and /api/devices answer 200 within a second each."""
    for path in ("/healthz", "/api/devices"):
        status, seconds = timed_get(url + path)
        assert status == 200 and seconds < 1.0, (path, seconds)


def enough_fds(n: int) -> None:
    """Raise this process's soft RLIMIT_NOFILE to `n` (skip the test if the hard one is lower)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < n:
        pytest.skip(f"hard RLIMIT_NOFILE {hard}: too low for this test")
    if soft != resource.RLIM_INFINITY and soft < n:
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, hard))


def read_answer(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """Everything the server sends until it closes the connection (or `timeout`)."""
    sock.settimeout(timeout)
    raw = b""
    try:
        while chunk := sock.recv(65536):
            raw += chunk
    except socket.timeout:
        pass
    return raw


class Rig:
    """Bounded servers and client sockets a test opens; all closed at teardown."""

    def __init__(self) -> None:
        self.servers: list[BoundedServer] = []
        self.socks: list[socket.socket] = []

    def serve(self, handler: Handler = echo_handler, **limits: Any) -> BoundedServer:
        server = BoundedServer(handler, limits=Limits(**limits))
        self.servers.append(server)
        return server

    def connect(self, server: BoundedServer | collector_http.HttpServer) -> socket.socket:
        sock = socket.create_connection((server.host, server.port), timeout=5)
        self.socks.append(sock)
        return sock

    def close(self) -> None:
        for sock in self.socks:
            sock.close()
        for server in self.servers:
            server.close()


@pytest.fixture
def rig() -> Iterator[Rig]:
    """Start servers (`rig.serve(handler, **limits)`) and clients (`rig.connect(server)`)."""
    r = Rig()
    yield r
    r.close()


def test_thousand_idle_connections_cost_no_thread_and_lock_out_nobody(
    served: ServedFleet, rig: Rig
) -> None:
    """1,000 held connections (half of them trickling headers) add no thread; /healthz and /api answer within 1 s."""
    enough_fds(4096)
    threads = threading.active_count()
    for i in range(1000):
        sock = rig.connect(served.server)
        if i % 2:
            sock.sendall(b"GET /api/devices HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
    wait_until(lambda: served.server.stats()["open"] >= 1000, timeout=10)
    assert threading.active_count() <= threads + 1, "a thread per connection"
    assert_answers_fast(served.url)
    assert served.server.stats()["evicted"] == 0  # all 1,000 held, not shed


def test_headers_sent_one_byte_a_second_are_cut_off_at_the_deadline(rig: Rig) -> None:
    """A client trickling its headers gets 408 and a close once header_timeout has passed."""
    server = rig.serve(header_timeout=2.0)
    sock = rig.connect(server)
    t0 = time.monotonic()
    answer = b""
    for byte in b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Slow: " + b"a" * 30:
        try:
            sock.sendall(bytes([byte]))
        except OSError:
            break
        if select.select([sock], [], [], 1.0)[0]:  # wait a second, or less if it answers
            answer = read_answer(sock)
            break
    elapsed = time.monotonic() - t0
    assert answer.startswith(b"HTTP/1.1 408"), answer[:80]
    assert 1.8 <= elapsed <= 4.0, elapsed
    assert server.stats()["timeout_header"] == 1


def test_a_body_over_the_limit_gets_413_and_one_within_reaches_the_handler(rig: Rig) -> None:
    """Content-Length over max_body_bytes is a 413 before reading; a smaller body arrives whole."""
    server = rig.serve(max_body_bytes=1000)
    conn = http.client.HTTPConnection(server.host, server.port, timeout=5)
    conn.request("POST", "/ingest", body=b"x" * 1000)
    resp = conn.getresponse()
    assert resp.status == 200 and json.loads(resp.read()) == {"method": "POST", "len": 1000}
    conn.close()
    sock = rig.connect(server)
    sock.sendall(b"POST /ingest HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1001\r\n\r\n")
    answer = read_answer(sock)
    assert answer.startswith(b"HTTP/1.1 413") and b"Connection: close" in answer
    assert server.stats()["body_too_large"] == 1


@pytest.mark.parametrize(
    ("request_bytes", "status", "counter"),
    [
        (b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 17_000 + b"\r\n\r\n", 431, "header_too_large"),
        (b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 17_000, 431, "header_too_large"),  # unfinished
        (b"GET /\r\n\r\n", 400, "bad_request"),
        (b"GET / HTTP/1.1\r\nno colon here\r\n\r\n", 400, "bad_request"),
        (b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400, "bad_request"),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 411, "bad_request"),
        (b"GET / HTTP/2.0\r\n\r\n", 505, "bad_request"),
    ],
)
def test_oversized_or_malformed_requests_are_answered_and_closed(
    rig: Rig, request_bytes: bytes, status: int, counter: str
) -> None:
    """Headers over 16 KiB get 431; a malformed request a 4xx/505; both close and are counted."""
    server = rig.serve()
    sock = rig.connect(server)
    sock.sendall(request_bytes)
    answer = read_answer(sock)
    assert answer.startswith(f"HTTP/1.1 {status}".encode()), answer[:80]
    assert b"Connection: close" in answer
    assert server.stats()[counter] == 1


def test_a_body_that_stalls_gets_408_after_body_timeout(rig: Rig) -> None:
    """A declared body that does not arrive within body_timeout is answered 408 and closed."""
    server = rig.serve(body_timeout=1.0)
    sock = rig.connect(server)
    sock.sendall(b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\nhalf")
    t0 = time.monotonic()
    answer = read_answer(sock)
    assert answer.startswith(b"HTTP/1.1 408") and time.monotonic() - t0 < 3.0
    assert server.stats()["timeout_body"] == 1


def test_keep_alive_serves_the_dashboard_polls_then_closes_when_idle(served: ServedFleet) -> None:
    """Polls reuse one connection; the server closes it once it has been idle idle_timeout."""
    server = collector_http.HttpServer(
        served.fleet, host="127.0.0.1", port=0, limits=Limits(idle_timeout=1.5)
    )
    try:
        conn = http.client.HTTPConnection(server.host, server.port, timeout=5)
        for _ in range(3):
            conn.request("GET", "/api/devices", headers={"Host": "localhost"})
            resp = conn.getresponse()
            assert resp.status == 200 and json.loads(resp.read())["count"] == 1
        assert server.stats()["accepted"] == 1 and server.stats()["requests"] == 3
        wait_until(lambda: server.stats()["idle_closed"] == 1, timeout=5)
        assert server.stats()["open"] == 0
        conn.close()
    finally:
        server.close()


def test_at_the_cap_the_oldest_idle_connection_makes_room(rig: Rig) -> None:
    """With max_connections held idle, a new client is served and the oldest holder is closed."""
    server = rig.serve(max_connections=8)
    holders = []
    for _ in range(8):
        holders.append(rig.connect(server))
        wait_until(lambda: server.stats()["open"] == len(holders))
    status, seconds = timed_get(f"http://127.0.0.1:{server.port}/")
    assert status == 200 and seconds < 1.0
    assert read_answer(holders[0], timeout=2) == b""  # closed by the server
    assert server.stats()["evicted"] == 1


def test_busy_workers_answer_503_at_once_instead_of_queueing(rig: Rig) -> None:
    """With the worker and its queue full, the next request gets busy_status and Retry-After."""
    release = threading.Event()

    def slow(req: Request) -> Response:
        release.wait(10)
        return Response(200, b"done")

    server = rig.serve(slow, workers=1, queue=1)
    socks = [rig.connect(server) for _ in range(3)]
    try:
        for i, sock in enumerate(socks):
            sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            wait_until(lambda i=i: server.stats()["requests"] == i + 1)
        busy = read_answer(socks[2])
        assert busy.startswith(b"HTTP/1.1 503") and b"Retry-After: 1" in busy
        release.set()
        for sock in socks[:2]:
            assert read_answer(sock).startswith(b"HTTP/1.1 200")
        assert server.stats()["busy"] == 1
    finally:
        release.set()


def health_answer(served: ServedFleet, health: Callable[[], Optional[str]]) -> tuple[int, Any]:
    """(status, JSON) of /healthz from a server of `served`'s fleet with this health check."""
    server = collector_http.start(served.fleet, served.config, health=health)
    try:
        status, _, body = get(server.url + "/healthz")
        return status, json.loads(body)
    finally:
        server.close()


def test_healthz_answers_503_with_the_reason_while_health_reports_one(
    served: ServedFleet,
) -> None:
    """/healthz is 503 {"status": "error", "reason"} while health() returns a reason, 200 after."""
    reason: list[Optional[str]] = [STORE_FULL]
    server = collector_http.start(served.fleet, served.config, health=lambda: reason[0])
    try:
        status, _, body = get(server.url + "/healthz")
        answer = json.loads(body)
        assert status == 503 and answer["status"] == "error" and answer["reason"] == STORE_FULL
        reason[0] = None
        status, _, body = get(server.url + "/healthz")
        assert status == 200 and json.loads(body)["status"] == "ok"
    finally:
        server.close()


def test_a_failing_health_callable_is_a_503_too(served: ServedFleet) -> None:
    """A health() that raises makes /healthz 503 with the error as the reason."""

    def broken() -> Optional[str]:
        raise RuntimeError("no store")

    status, answer = health_answer(served, broken)
    assert status == 503 and "no store" in answer["reason"]


# Run in a child: it takes every free descriptor, so the test process keeps its own.
OUT_OF_FDS = textwrap.dedent(
    """
    import json, os, resource, sys, threading, time
    from fleetbeat.collector import http
    from fleetbeat.collector.config import parse_collector_config
    from fleetbeat.collector.fleet import Fleet

    config = parse_collector_config({"collector": {"http_listen": "127.0.0.1:0"}}, "t")
    server = http.start(Fleet(config.collector), config)
    tid = next(t.native_id for t in threading.enumerate() if t.name == "http")
    stat = os.open(f"/proc/self/task/{tid}/stat", os.O_RDONLY)
    tick = os.sysconf("SC_CLK_TCK")

    def cpu():
        fields = os.pread(stat, 4096, 0).decode().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / tick  # utime + stime

    print(server.port, flush=True)
    held = int(sys.stdin.readline())  # connections the parent holds open
    deadline = time.monotonic() + 5
    while held and server.stats()["open"] < held and time.monotonic() < deadline:
        time.sleep(0.01)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    fillers = []
    try:
        while True:
            fillers.append(os.open(os.devnull, os.O_RDONLY))
    except OSError:
        pass
    print("full", flush=True)
    for command in sys.stdin:
        if command == "cpu\\n":  # the server thread's CPU seconds in the next second
            before = cpu()
            time.sleep(1.0)
            print(f"{cpu() - before:.3f}", flush=True)
        elif command == "free\\n":
            for fd in fillers:
                os.close(fd)
            print("freed", flush=True)
        else:
            print(json.dumps(server.stats()), flush=True)
    """
)


class FdStarved:
    """A child process serving HTTP with every descriptor taken; `ask` sends it a command."""

    def __init__(self, held: int = 0) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", OUT_OF_FDS], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=subprocess_env())  # fmt: skip
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())
        self.holders = [socket.create_connection(("127.0.0.1", self.port)) for _ in range(held)]
        assert self.ask(str(held)) == "full"

    def ask(self, command: str) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def close(self) -> None:
        for sock in self.holders:
            sock.close()
        self.proc.kill()
        self.proc.wait(5)


@pytest.fixture
def fd_starved() -> Iterator[Callable[[int], FdStarved]]:
    """Start FdStarved children (`fd_starved(held)`); killed at teardown."""
    started: list[FdStarved] = []

    def start(held: int) -> FdStarved:
        started.append(FdStarved(held))
        return started[-1]

    yield start
    for child in started:
        child.close()


HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"


def test_accept_without_a_free_descriptor_does_not_spin(
    fd_starved: Callable[[int], FdStarved],
) -> None:
    """With no free descriptor a client is closed at once, the server thread stays idle, and serving resumes when fds free up."""
    child = fd_starved(0)
    shed = socket.create_connection(("127.0.0.1", child.port), timeout=5)
    waiting = socket.create_connection(("127.0.0.1", child.port), timeout=5)
    cpu = float(child.ask("cpu"))
    assert cpu < 0.1, f"the server thread used {cpu:.2f} s of CPU in 1 s"
    assert read_answer(shed, timeout=2) == b""  # told at once, not left hanging
    assert child.ask("free") == "freed"
    for sock in (waiting, socket.create_connection(("127.0.0.1", child.port), timeout=5)):
        try:
            sock.sendall(HEALTHZ)
            answer = read_answer(sock, timeout=5)
        except OSError:
            answer = b""  # `waiting` may have been shed too, during the pause
        sock.close()
    assert answer.startswith(b"HTTP/1.1 200")
    stats = json.loads(child.ask("stats"))
    assert stats["accept_errors"] >= 1 and stats["refused"] >= 1


def test_out_of_descriptors_an_idle_holder_gives_its_own_to_a_new_client(
    fd_starved: Callable[[int], FdStarved],
) -> None:
    """When accept() fails for want of fds, the oldest idle connection is closed and the newcomer served."""
    child = fd_starved(1)
    newcomer = socket.create_connection(("127.0.0.1", child.port), timeout=5)
    newcomer.sendall(HEALTHZ)
    assert read_answer(newcomer, timeout=3).startswith(b"HTTP/1.1 200")
    newcomer.close()
    assert read_answer(child.holders[0], timeout=2) == b""  # evicted
    stats = json.loads(child.ask("stats"))
    assert stats["accept_errors"] >= 1 and stats["evicted"] == 1


def test_the_fd_limit_is_raised_for_the_cap_or_the_cap_shrinks_to_fit() -> None:
    """Starting a server raises the soft RLIMIT_NOFILE toward the hard one; a low hard limit lowers the cap."""
    script = textwrap.dedent(
        """
        import resource, sys
        from fleetbeat.collector.httpserver import FD_RESERVE, BoundedServer, Limits, Response
        hard = int(sys.argv[1])
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
        server = BoundedServer(lambda req: Response(200), limits=Limits(max_connections=1024))
        print(resource.getrlimit(resource.RLIMIT_NOFILE)[0], server.max_connections, FD_RESERVE)
        server.close()
        """
    )

    def run(hard: int) -> list[int]:
        done = subprocess.run([sys.executable, "-c", script, str(hard)], capture_output=True,
                              text=True, env=subprocess_env(), timeout=30, check=True)  # fmt: skip
        return [int(x) for x in done.stdout.split()]

    soft, cap, reserve = run(8192)
    assert (soft, cap) == (1024 + reserve, 1024)
    soft, cap, reserve = run(600)
    assert (soft, cap) == (600, 600 - reserve)


def slow_reader(rig: Rig, server: BoundedServer) -> socket.socket:
    """A client with a tiny receive window that asks for an answer and never reads it."""
    sock = socket.socket()
    rig.socks.append(sock)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((server.host, server.port))
    sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
    return sock


def big(req: Request) -> Response:
    """16 MB: more than the kernel's socket buffers on loopback hold."""
    return Response(200, b"x" * (16 << 20))


def test_a_client_that_does_not_read_its_answer_is_dropped_after_write_timeout(rig: Rig) -> None:
    """An answer still unwritten after write_timeout closes the connection and is counted."""
    server = rig.serve(big, write_timeout=1.0)
    slow_reader(rig, server)
    wait_until(lambda: server.stats()["timeout_write"] == 1, timeout=5)
    assert server.stats()["open"] == 0


def test_answers_waiting_for_slow_readers_are_bounded_in_bytes(rig: Rig) -> None:
    """Past max_output_bytes of unwritten answers, the longest-stalled reader is dropped."""
    server = rig.serve(big, max_output_bytes=24 << 20)
    first = slow_reader(rig, server)
    wait_until(lambda: server.stats()["requests"] == 1)
    slow_reader(rig, server)
    wait_until(lambda: server.stats()["timeout_write"] == 1, timeout=5)
    assert read_answer(first, timeout=5).startswith(b"HTTP/1.1 200")  # cut short
    assert server.stats()["open"] == 1


def test_a_handler_that_raises_is_a_500_and_the_connection_lives_on(rig: Rig) -> None:
    """A handler exception becomes a 500, counted; the keep-alive connection serves the next request."""
    calls = []

    def flaky(req: Request) -> Response:
        calls.append(req.target)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return Response(200, b"fine")

    server = rig.serve(flaky)
    conn = http.client.HTTPConnection(server.host, server.port, timeout=5)
    conn.request("GET", "/one")
    resp = conn.getresponse()
    assert resp.status == 500 and b"internal error" in resp.read()
    conn.request("GET", "/two")
    resp = conn.getresponse()
    assert resp.status == 200 and resp.read() == b"fine"
    assert server.stats()["handler_errors"] == 1 and server.stats()["accepted"] == 1
    conn.close()


def test_a_real_collector_at_systemds_default_fd_limit_holds_1000_idle_connections(
    start_collector: Callable[..., CollectorProcess], rig: Rig
) -> None:
    """Started at systemd's default soft limit of 1,024 fds, the collector raises it and serves through 1,000 held connections."""
    enough_fds(4096)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))  # the child inherits it
    try:
        collector = start_collector()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    url = wait_until(collector.http_url)
    assert "raised the soft file-descriptor limit from 1024" in collector.log()
    port = int(url.rsplit(":", 1)[1])
    for _ in range(1000):
        rig.socks.append(socket.create_connection(("127.0.0.1", port), timeout=5))
    assert_answers_fast(url)
    assert collector.proc.poll() is None and "Traceback" not in collector.log()
