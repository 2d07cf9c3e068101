"""How a log line names a socket address: one formatter for every server and the loop."""

from __future__ import annotations

from typing import Any


def client(address: Any) -> str:
    """``host:port`` (``[host]:port`` for IPv6) of a socket address; a unix path as is."""
    if isinstance(address, tuple) and len(address) >= 2:
        host = address[0]
        return f"[{host}]:{address[1]}" if ":" in host else f"{host}:{address[1]}"
    return str(address) or "a client"
