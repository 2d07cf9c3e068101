"""Serving an ASGI 3 application on the asyncio worker: one :class:`ASGIServer` per listener.

What connections on one listener share (the app, the limits and timeouts,
the constant part of the scope, the lifespan state, the access log), and
how an accepted socket becomes a connection: an asyncio transport with an
:class:`~.http.AsgiConnection` as its protocol.  The worker's loop
(:mod:`prefork.worker.aio_loop`) accepts; this server never does.
"""

from __future__ import annotations

import socket
import time
from typing import Any, Callable, Dict, Optional

from ..http.parser import Limits, Request
from ..wsgi import AccessLog
from .http import AsgiConnection
from .scope import base_scope, http_scope


class ASGIServer:
    """One listener's share of every connection; see the module docstring."""

    # As WSGIServer's: a few connections per wake-up, so that one worker does
    # not take most of a burst of new keep-alive clients.
    accept_batch = 4

    def __init__(self, sock: socket.socket, app: Callable, config: Any,
                 access_log: Optional[AccessLog], state: Optional[Dict[str, Any]]) -> None:
        self.socket = sock
        self.app = app
        self.limits = Limits(request_line=config.limit_request_line,
                             header_count=config.limit_request_fields,
                             header_size=config.limit_request_field_size,
                             body_size=config.max_body_size)
        self.header_timeout = config.header_timeout
        self.client_timeout = config.client_timeout
        self.keepalive = config.keepalive
        self.request_timeout = config.request_timeout    # enforced here: see AsgiConnection.tick
        self.access_log = access_log
        self.state = state          # the lifespan state; each request gets a copy
        self._base = base_scope(sock.getsockname(), config.root_path)
        if sock.family in (socket.AF_INET, socket.AF_INET6) and hasattr(socket, "TCP_DEFER_ACCEPT"):
            # As for WSGI: accept a connection once its request has arrived.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, 1)

    def accepted(self, conn: socket.socket, address: Any, loop: Any) -> None:
        conn.setblocking(False)
        protocol = AsgiConnection(self, loop, address)
        ev = loop.loop
        make = getattr(ev, "_make_socket_transport", None)
        if make is not None:
            # asyncio's own loop: the transport made at once, as its accept loop
            # makes it, without connect_accepted_socket's task per connection.
            make(conn, protocol, extra={"peername": address})
        else:
            task = ev.create_task(ev.connect_accepted_socket(lambda: protocol, conn))
            task.add_done_callback(lambda t: _failed_transport(t, protocol, conn))

    def scope(self, request: Request, address: Any) -> Dict[str, Any]:
        return http_scope(self._base, request, address, self.state)

    def log_access(self, connection: AsgiConnection, cycle: Any) -> None:
        if self.access_log is not None:
            self.access_log.write(connection.address, cycle.request, cycle.code,
                                  cycle.body_bytes, time.monotonic() - cycle.started)

    def log_rejection(self, connection: AsgiConnection, status: int) -> None:
        if self.access_log is not None:
            self.access_log.write(connection.address, None, status, 0, 0.0)

    def close_idle(self, min_wait: float) -> None:
        """Idle connections are parked in the loop, which stops them itself."""

    def server_close(self) -> None:
        self.socket.close()


def _failed_transport(task: Any, protocol: AsgiConnection, conn: socket.socket) -> None:
    """The client left before its transport was made: forget the connection."""
    if not task.cancelled() and task.exception() is None:
        return
    conn.close()
    protocol.closed = True
    protocol.aloop.forget(protocol)
