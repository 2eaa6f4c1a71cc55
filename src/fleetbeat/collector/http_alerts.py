"""The alert routes of the HTTP API (the router in `fleetbeat.collector.http` calls them).

    GET    /api/alerts          active alerts, most severe first; `suppressed` says by what
                                (a silence with its comment, maintenance, a parent, flapping)
                                or null; `?limit=N` (default 1000), `counts` of them all;
                                and each notifier's counts, pending and failures
    GET    /api/silences        silences in force, soonest to end first
    POST   /api/silences        {"device": "pi-1"} or {"tag": "site:barn"}, with "duration":
                                "2h" or "until": <epoch s>, and "comment": "..." -> 201 {"id"}
    DELETE /api/silences/{id}   200 {"id", "deleted": true}, or 404

The writes pass `fleetbeat.collector.http_write.WriteGuard` first (the token, the origin,
the content type). A silence takes effect at the next notification; the main loop keeps it
in `alerts.db` within a turn.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from http import HTTPStatus
from typing import Callable, Optional
from urllib.parse import unquote

from fleetbeat.collector.alerting import Alerting
from fleetbeat.collector.http_write import BadBody, Reply, json_body
from fleetbeat.collector.httpserver import Request
from fleetbeat.collector.suppress import parse_silence
from fleetbeat.errors import InputError

SILENCES = "/api/silences"
READS = ("/api/alerts", SILENCES)
DEFAULT_LIMIT = 1000  # a site of 10,000 gone dark is 3 MB of JSON whole: ~60 ms to encode
MAX_LIMIT = 1_000_000


class AlertsApi:
    """The alert routes over one running `Alerting`."""

    def __init__(self, alerting: Alerting, *, clock: Callable[[], float] = time.time) -> None:
        self.alerting = alerting
        self._clock = clock

    @staticmethod
    def methods(path: str) -> tuple[str, ...]:
        """The write methods `path` takes (empty: not one of these routes)."""
        if path == SILENCES:
            return ("POST",)
        if path.startswith(SILENCES + "/"):
            return ("DELETE",)
        return ()

    def read(self, path: str, query: Mapping[str, list[str]]) -> Optional[Reply]:
        """The answer to a GET of `path`, or None when it is not an alert route."""
        now = self._clock()
        if path == "/api/alerts":
            raw = query.get("limit", [str(DEFAULT_LIMIT)])[-1]
            if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
                return HTTPStatus.BAD_REQUEST, {"error": f"limit: expected 1 to {MAX_LIMIT}, "
                                                f"got {raw!r}"}, {}  # fmt: skip
            now, alerts = self.alerting.active()
            quiet = sum(1 for a in alerts if a["suppressed"] is not None)
            counts = {"total": len(alerts), "firing": len(alerts) - quiet, "suppressed": quiet}
            body = {"time": now, "counts": counts, "alerts": alerts[: int(raw)],
                    **self.alerting.stats()}  # fmt: skip
            return HTTPStatus.OK, body, {}
        if path == SILENCES:
            found = [s.to_json() for s in self.alerting.alerts.silences.list(now)]
            return HTTPStatus.OK, {"time": now, "silences": found}, {}
        return None

    def write(self, req: Request, path: str) -> Reply:
        """A write the guard let through, to a path and method `methods` allows."""
        if req.method == "POST":
            now = self._clock()
            try:
                match, until, comment = parse_silence(json_body(req), now)
            except (InputError, BadBody) as err:
                return HTTPStatus.BAD_REQUEST, {"error": str(err)}, {}
            s = self.alerting.add_silence(match, until, comment, now)
            return HTTPStatus.CREATED, s.to_json(), {"Location": f"{SILENCES}/{s.id}"}
        ident = unquote(path[len(SILENCES) + 1 :])
        if not self.alerting.remove_silence(ident):
            return HTTPStatus.NOT_FOUND, {"error": "no such silence", "id": ident}, {}
        return HTTPStatus.OK, {"id": ident, "deleted": True}, {}
