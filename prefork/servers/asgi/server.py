"""Serving an ASGI 3 application on the asyncio worker: one :class:`ASGIServer` per listener.

What connections on one listener share (the app, the limits and timeouts,
the constant part of the scope, the lifespan state, the access log), and
how an accepted socket becomes a connection: an asyncio transport with an
:class:`~.http.AsgiConnection` as its protocol.  The worker's loop
(:mod:`prefork.worker.aio_loop`) accepts; this server never does.
"""

from __future__ import annotations

import socket
from typing import Any, Callable, Dict, Optional

from ..http.listener import HttpListener
from ..http.parser import Request
from ..wsgi import AccessLog
from .http import AsgiConnection
from .scope import base_scope, http_scope


class ASGIServer(HttpListener):
    """One listener's share of every connection; see the module docstring."""

    def __init__(self, sock: socket.socket, app: Callable, config: Any,
                 access_log: Optional[AccessLog], state: Optional[Dict[str, Any]]) -> None:
        super().__init__(sock, app, config, access_log)
        self.request_timeout = config.request_timeout    # enforced here: see AsgiConnection.tick
        self.state = state          # the lifespan state; each request gets a copy
        self.ws_max_size: int = config.ws_max_size
        self.ws_ping_interval: float = config.ws_ping_interval
        self.ws_ping_timeout: float = config.ws_ping_timeout
        self._base = base_scope(sock.getsockname(), config.root_path)

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
        self._write_access(connection.address, cycle.request, cycle.code,
                           cycle.body_bytes, cycle.started)


def _failed_transport(task: Any, protocol: AsgiConnection, conn: socket.socket) -> None:
    """The client left before its transport was made: forget the connection."""
    if not task.cancelled() and task.exception() is None:
        return
    conn.close()
    protocol.closed = True
    protocol.aloop.forget(protocol)
