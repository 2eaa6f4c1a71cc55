"""The HTTP server's worker threads: they run the handler on complete requests, nothing else.

Sockets stay with the selector thread (`collector.httpserver`): a worker hands its
answer back through `done` and never writes to a connection itself.
"""

from __future__ import annotations

import logging
import queue
import threading
from http import HTTPStatus
from typing import Any, Callable, Optional

from fleetbeat.collector.httpmsg import Handler, Request, answer, error_response
from fleetbeat.logutil import RateLimitedLog

Done = Callable[[Any, bytes, bool, bool], None]  # (connection, answer, close after, failed)


class Workers:
    """`count` threads answering requests from a queue of `size`.

    Args:
        handler: request -> response; an exception becomes a 500 (logged at a limited rate).
        done: called on the worker thread with each answer's bytes.
        name: the threads are named `{name}-worker-{i}`.
    """

    def __init__(self, handler: Handler, *, count: int, size: int, name: str, done: Done,
                 ratelog: RateLimitedLog) -> None:  # fmt: skip
        self._handler = handler
        self._done = done
        self._ratelog = ratelog
        self._jobs: queue.Queue[Optional[tuple[Any, Request]]] = queue.Queue(size)
        self._halted = False
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-worker-{i}", daemon=True)
            for i in range(max(1, count))
        ]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def submit(self, conn: Any, req: Request) -> bool:
        """Queue a request; False at once when the queue is full (the caller answers busy)."""
        try:
            self._jobs.put_nowait((conn, req))
        except queue.Full:
            return False
        return True

    def halt(self) -> None:
        """Take no more requests (the server is stopping)."""
        self._halted = True

    def join(self) -> None:
        """Halt, wake every thread and wait for each about a second at most."""
        self._halted = True
        for _ in self._threads:
            try:
                self._jobs.put(None, timeout=1)
            except queue.Full:
                break
        for t in self._threads:
            t.join(timeout=1)

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None or self._halted:
                return
            conn, req = job
            failed = False
            try:
                resp = self._handler(req)
            except Exception as err:
                failed = True
                self._ratelog.log(logging.ERROR, "handler", "HTTP %s %s failed: %r",
                                  req.method, req.target[:200], err)  # fmt: skip
                resp = error_response(HTTPStatus.INTERNAL_SERVER_ERROR,
                                      "internal error; see collector log")  # fmt: skip
            raw, close = answer(req, resp)
            self._done(conn, raw, close, failed)
