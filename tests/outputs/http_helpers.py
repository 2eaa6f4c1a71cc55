"""A small real HTTP server for the HTTP output's tests: records requests, answers as told."""

from __future__ import annotations

import http.server
import ssl
import threading
from pathlib import Path
from typing import Any, Optional

from fleetbeat.config.schema import Problems, load_table
from fleetbeat.outputs.base import Identity
from fleetbeat.outputs.http_post import HttpConfig, HttpOutput

IDENTITY = Identity(dev="test-dev", run="0123456789abcdef", boot_time=0, version="t", tags={})


class Server:
    """stdlib HTTP/1.1 server on loopback. `status`, `close_each`, `hold` shape the answers."""

    def __init__(self, *, tls: Optional[dict[str, Path]] = None) -> None:
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.connections = 0
        self.status = 204
        self.body = b""
        self.close_each = False  # Connection: close on every answer
        self.hold = threading.Event()  # cleared: answers wait until it is set again
        self.hold.set()
        self.arrived = threading.Event()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                owner.connections += 1
                super().setup()

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                owner.requests.append((self.path, dict(self.headers), body))
                owner.arrived.set()
                owner.hold.wait(30)
                self.send_response(owner.status)
                self.send_header("Content-Length", str(len(owner.body)))
                if owner.close_each:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                self.end_headers()
                self.wfile.write(owner.body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        scheme = "http"
        if tls is not None:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(tls["cert"], tls["key"])
            self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
            scheme = "https"
        self.port = self.httpd.server_port
        self.url = f"{scheme}://127.0.0.1:{self.port}/ingest"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def bodies(self) -> list[bytes]:
        return [body for _, _, body in self.requests]

    def stop(self) -> None:
        self.hold.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def make_output(url: str, **kw: Any) -> HttpOutput:
    """A started HTTP output posting to `url`; `kw` are TOML keys ("0.3s", a tls table)."""
    problems = Problems("test")
    config = load_table(HttpConfig, {"url": url, **kw}, "outputs.http", problems)
    assert not problems, problems.items
    out = HttpOutput(config, identity=IDENTITY, name="http test")
    out.start()
    return out
