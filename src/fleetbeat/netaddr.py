"""Small address helpers both sides use: "host:port" text and the loopback test.

Outside `collector/` and `agent/` on purpose: outputs, receivers and the CLI may
all import it (round two of issue 11 moves the collector's copies here).
"""

from __future__ import annotations


def hostport(host: str, port: object) -> str:
    """ "host:port", or "[v6]:port" for an IPv6 address (as URLs and listen keys write it)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def is_loopback(host: str) -> bool:
    """True for `localhost`, `127.0.0.1`, `::1`, `[::1]` and the rest of 127.0.0.0/8."""
    import ipaddress  # only where a caller asks: a UDP-only agent never does

    host = host.strip().lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
