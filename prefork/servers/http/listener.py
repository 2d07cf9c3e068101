"""What every HTTP server on one listener shares, whatever the worker kind.

:class:`HttpListener` holds the limits and timeouts read from the config,
the access log, the listener's TCP_DEFER_ACCEPT set-up and the accept
batch; :class:`~prefork.servers.wsgi.WSGIServer` (selector worker) and
:class:`~prefork.servers.asgi.server.ASGIServer` (asyncio worker) subclass
it and add only what differs: how a request is handed to the app and how an
accepted socket becomes a connection (``accepted``).
"""

from __future__ import annotations

import socket
import time
from typing import Any, Callable, Optional, Tuple

from ... import netlist
from ..edge import forwarded
from .parser import Limits, Request


class HttpListener:
    """One listener's share of every connection; subclasses define ``accepted``."""

    # Accepting a connection never blocks on the app (requests run from the
    # selector or the event loop), so a worker may take several per wakeup;
    # only a few, though: with 16 in a row one of 2 workers got up to 47 of a
    # burst of 64 new keep-alive clients (and kept them), with 4 at most 44
    # and mostly 36, at no measurable cost in accepts per second
    # (benchmarks/README.md).
    accept_batch = 4

    def __init__(self, sock: socket.socket, app: Callable, config: Any,
                 access_log: Optional[Any]) -> None:
        self.socket = sock
        self.app = app
        self.limits = Limits(request_line=config.limit_request_line,
                             header_count=config.limit_request_fields,
                             header_size=config.limit_request_field_size,
                             body_size=config.max_body_size)
        self.header_timeout = config.header_timeout
        self.client_timeout = config.client_timeout
        self.keepalive = config.keepalive
        self.access_log = access_log
        self.forwarded_allow = netlist.parse(config.forwarded_allow_ips)
        self.forwarded_kind = config.forwarded_headers
        if sock.family in (socket.AF_INET, socket.AF_INET6) and hasattr(socket, "TCP_DEFER_ACCEPT"):
            # Accept a connection once its request has arrived: one wakeup
            # fewer per connection, and idle connects never reach a worker.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, 1)

    def accepted(self, conn: socket.socket, address: Any, loop: Any) -> Any:
        """Make the connection (returned, so that a stopping edge can stop it)."""
        raise NotImplementedError

    def trusts(self, address: Any) -> bool:
        """Does the peer at ``address`` vouch for its clients (forwarded_allow_ips)?
        Asked once per connection; its requests' forwarding headers are read only then."""
        return self.forwarded_allow.allows(address[0] if isinstance(address, tuple) else None)

    def forwarded_client(self, request: Request, address: Any) -> Tuple[Any, Optional[str]]:
        """(the client's address, the scheme or None) as a trusted peer's headers say;
        ``address`` and None when they say nothing."""
        return forwarded.client_and_scheme(address, request.headers, self.forwarded_allow,
                                           self.forwarded_kind)

    def _write_access(self, address: Any, request: Optional[Request], code: int,
                      size: int, started: float) -> None:
        if self.access_log is not None:
            self.access_log.write(address, request, code, size, time.monotonic() - started)

    def log_rejection(self, connection: Any, status: int) -> None:
        if self.access_log is not None:
            self.access_log.write(connection.address, None, status, 0, 0.0)

    def close_idle(self, min_wait: float) -> None:
        """Idle connections are parked in the loop, which stops them itself."""

    def server_close(self) -> None:
        self.socket.close()
