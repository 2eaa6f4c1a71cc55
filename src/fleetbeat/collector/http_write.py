"""The rules every state-changing HTTP request meets, whatever it changes.

Reads stay open on loopback. A write (any method but GET and HEAD) is refused unless:

- its `Origin`, when it has one, is the server's own (`http://` + the request's Host): a
  page on another site, which a browser on this machine may be showing, gets 403;
- it carries `Authorization: Bearer <token>` with the collector's API token (`ApiToken`,
  `{state_dir}/api-token` unless `api_token_file` says otherwise): else 401;
- a request with a body, and every POST, PUT and PATCH, says `Content-Type:
  application/json`: else 415. An HTML form can only send `application/x-www-form-urlencoded`,
  `multipart/form-data` or `text/plain`, and a script on another origin that sets any other
  type, or the `Authorization` header, must first pass a CORS preflight (OPTIONS), which this
  server answers 405. A DELETE without a body needs no type: a form cannot send DELETE.

The router (`fleetbeat.collector.http`) checks every write here before its handler runs,
so a new write endpoint cannot forget to.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any, Optional

from fleetbeat.collector.auth import ApiToken
from fleetbeat.collector.httpserver import Request

Reply = tuple[int, Any, dict[str, str]]  # status, JSON-ready body, extra headers

_BODY_METHODS = ("POST", "PUT", "PATCH")


class BadBody(Exception):
    """The body is not the JSON the handler needs; the message goes back with a 400."""


class WriteGuard:
    """Says why a write must be refused, or None when it may go on.

    Args:
        token: the API token; None refuses every write (no token was set up).
    """

    def __init__(self, token: Optional[ApiToken]) -> None:
        self.token = token

    def refuse(self, req: Request) -> Optional[Reply]:
        origin = req.headers.get("origin")
        host = req.headers.get("host", "")
        if origin is not None and (not host or origin.strip().lower() != f"http://{host.lower()}"):
            return HTTPStatus.FORBIDDEN, {"error": "cross-origin writes are refused"}, {}
        if self.token is None or not self.token.accepts(req.headers.get("authorization")):
            why = "no API token is set up" if self.token is None else "missing or wrong API token"
            return (HTTPStatus.UNAUTHORIZED, {"error": f"{why}: send Authorization: Bearer "
                    "<the token in the collector's api-token file>"},
                    {"WWW-Authenticate": 'Bearer realm="fleetbeat"'})  # fmt: skip
        ctype = req.headers.get("content-type", "").partition(";")[0].strip().lower()
        if (req.body or req.method in _BODY_METHODS) and ctype != "application/json":
            return (HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                    {"error": "writes take Content-Type: application/json"}, {})  # fmt: skip
        return None


def json_body(req: Request) -> Any:
    """The request's body as JSON; BadBody when it is not."""
    try:
        return json.loads(req.body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadBody(f"the body is not JSON: {exc}") from None
