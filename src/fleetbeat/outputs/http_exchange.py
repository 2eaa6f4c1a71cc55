"""One HTTP/1.1 connection of the HTTP output: connect, POST, read the answer, notice a close.

Written on a plain socket rather than `http.client`, which imports `ssl` when it
is imported (measured on CPython 3.11: +6.4 MiB RSS, 4.5 of it `ssl`); the output
sends one shape of request and needs only the status of the answer. `ssl` is
imported here only for an https URL. Everything here blocks, each step bounded
by the request's deadline, and runs only on the output's worker thread.
"""

from __future__ import annotations

import errno
import select
import socket
import time
from typing import Any, Optional

from fleetbeat.config.secrets import TlsConfig
from fleetbeat.errors import ConfigError
from fleetbeat.outputs.mqtt_link import describe_os_error

MAX_HEAD = 16 * 1024  # an answer's status line and headers
MAX_BODY = 64 * 1024  # an answer body read to keep the connection; a longer one closes it
_UNREACHABLE = (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EHOSTDOWN, errno.ENETDOWN)


class HttpFailure(Exception):
    """The exchange failed; `reason` is the drop reason it is counted under."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class Answer:
    """What the server said: its status, phrase and the start of its body (for the log)."""

    __slots__ = ("body", "phrase", "status")

    def __init__(self, status: int, phrase: str, body: bytes) -> None:
        self.status = status
        self.phrase = phrase
        self.body = body


def tls_context(tls: Optional[TlsConfig], *, name: str) -> Any:
    """An `ssl.SSLContext` checking the server against `ca_file` (else the system CAs)."""
    import ssl

    ctx = ssl.create_default_context(cafile=tls.ca_file if tls else None)
    try:
        if tls is not None and tls.cert_file:
            ctx.load_cert_chain(tls.cert_file, tls.key_file)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        raise ConfigError([f"{name}: tls: cannot load the certificates: {exc}"]) from None
    if tls is not None and tls.insecure:
        ctx.check_hostname = False
    return ctx


def classify(exc: BaseException) -> tuple[str, str]:
    """(drop reason, detail) of an exception from connecting or exchanging."""
    detail = describe_os_error(exc)
    if isinstance(exc, socket.gaierror):
        return "unresolved", detail
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "timeout", "no answer in time"
    if type(exc).__module__ == "ssl" and not isinstance(exc, ConnectionError):
        name = type(exc).__name__
        if name in ("SSLEOFError", "SSLZeroReturnError"):
            return "reset", "the server closed the TLS connection"
        return "tls", detail
    if isinstance(exc, ConnectionRefusedError):
        return "refused", detail
    if isinstance(exc, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
        return "reset", detail
    if isinstance(exc, OSError) and exc.errno in _UNREACHABLE:
        return "unreachable", detail
    return "os_error", detail


class Connection:
    """A keep-alive connection to `host:port`, TLS when `context` is given."""

    def __init__(self, host: str, port: int, *, timeout: float, context: Any = None) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self.context = context
        self.sock: Optional[socket.socket] = None
        self._buf = bytearray()
        self._deadline = 0.0

    def open(self) -> None:
        """Look the name up, connect, shake hands; raise HttpFailure."""
        self._deadline = time.monotonic() + self.timeout
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if self.context is not None:
                    sock.settimeout(self._left())
                    sock = self.context.wrap_socket(sock, server_hostname=self.host)
            except BaseException:
                sock.close()
                raise
        except (OSError, ValueError) as exc:
            raise HttpFailure(*classify(exc)) from None
        self.sock = sock

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        self._buf.clear()

    def idle_closed(self) -> bool:
        """The idle socket was readable: True when the server closed it (or spoke unasked).

        A TLS 1.3 server's session tickets also make it readable: they carry no data.
        """
        sock = self.sock
        if sock is None:
            return True
        sock.settimeout(0)
        try:
            # plain: a peek leaves any byte in place; TLS: recv() reads records, not bytes
            sock.recv(1, socket.MSG_PEEK) if self.context is None else sock.recv(1)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as exc:  # SSLWantRead: only tickets; anything else: it is gone
            return type(exc).__name__ not in ("SSLWantReadError", "SSLWantWriteError")
        finally:
            if self.sock is not None:
                sock.settimeout(self.timeout)
        return True  # b"": closed; bytes nobody asked for: out of step, made again

    def post(self, head: bytes, payload: bytes) -> Answer:
        """Send one request and read its answer; raise HttpFailure (the connection is closed)."""
        sock = self.sock
        if sock is None:
            raise HttpFailure("not_connected", "no connection")
        self._deadline = time.monotonic() + self.timeout
        try:
            sock.settimeout(self._left())
            sock.sendall(head + payload)
            answer, keep = self._read_answer()
        except HttpFailure:
            self.close()
            raise
        except (OSError, ValueError) as exc:
            self.close()
            raise HttpFailure(*classify(exc)) from None
        if not keep or self._buf:  # bytes past the answer: out of step
            self.close()
        return answer

    # --- reading the answer -------------------------------------------------------------

    def _left(self) -> float:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("timed out")
        return left

    def _fill(self) -> None:
        sock = self.sock
        if sock is None:  # pragma: no cover - post() checked it
            raise HttpFailure("not_connected", "no connection")
        sock.settimeout(self._left())
        data = sock.recv(65536)
        if not data:
            raise HttpFailure("reset", "the server closed the connection before it answered")
        self._buf += data

    def _read_answer(self) -> tuple[Answer, bool]:
        """The final answer (1xx skipped) and whether the connection stays open."""
        buf = self._buf
        while True:
            end = buf.find(b"\r\n\r\n")
            while end < 0:
                if len(buf) > MAX_HEAD:
                    raise HttpFailure("bad_response", f"answer headers over {MAX_HEAD} bytes")
                self._fill()
                end = buf.find(b"\r\n\r\n")
            lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
            del buf[: end + 4]
            parts = lines[0].split(" ", 2)
            if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
                raise HttpFailure("bad_response", repr(lines[0][:80]))
            status = int(parts[1])
            if status >= 200:
                break
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip().lower()
        tokens = {t.strip() for t in headers.get("connection", "").split(",")}
        keep = "close" not in tokens and (parts[0] != "HTTP/1.0" or "keep-alive" in tokens)
        body = b""
        if status in (204, 304):
            pass
        elif "chunked" in headers.get("transfer-encoding", ""):
            body, keep = self._read_chunked(keep)
        elif headers.get("content-length", "").isdigit():
            length = int(headers["content-length"])
            if length > MAX_BODY:
                keep = False  # not worth reading: the connection is made again instead
            else:
                while len(buf) < length:
                    self._fill()
                body = bytes(buf[:length])
                del buf[:length]
        else:  # the body ends when the server closes the connection
            keep = False
        return Answer(status, parts[2] if len(parts) > 2 else "", body[:200]), keep

    def _read_chunked(self, keep: bool) -> tuple[bytes, bool]:
        buf = self._buf
        body = bytearray()
        while True:
            end = buf.find(b"\r\n")
            while end < 0:
                if len(buf) > MAX_HEAD:
                    raise HttpFailure("bad_response", "bad chunk size line")
                self._fill()
                end = buf.find(b"\r\n")
            size_text = bytes(buf[:end]).split(b";")[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise HttpFailure("bad_response", "bad chunk size") from None
            del buf[: end + 2]
            if size == 0:
                while True:  # trailers, then the final blank line
                    while len(buf) < 2:
                        self._fill()
                    if buf[:2] == b"\r\n":
                        del buf[:2]
                        return bytes(body), keep
                    self._skip_line()
            if len(body) + size > MAX_BODY:
                return bytes(body), False
            while len(buf) < size + 2:
                self._fill()
            body += buf[:size]
            del buf[: size + 2]

    def _skip_line(self) -> None:
        buf = self._buf
        while buf.find(b"\r\n") < 0:
            if len(buf) > MAX_HEAD:
                raise HttpFailure("bad_response", "trailers too long")
            self._fill()
        del buf[: buf.find(b"\r\n") + 2]


def wait_readable(socks: list[Any], timeout: float) -> list[Any]:
    """The sockets of `socks` that are readable within `timeout` (none if one is closed)."""
    try:
        readable, _, _ = select.select(socks, [], [], timeout)
    except (OSError, ValueError):
        return []
    return readable
