"""Serving an ASGI 3 application on the asyncio worker: one :class:`ASGIServer` per listener.

What connections on one listener share (the app, the limits and timeouts,
the constant part of the scope, the lifespan state, the access log), and
how an accepted socket becomes a connection: an asyncio transport with an
:class:`~.http.AsgiConnection` as its protocol.  The worker's loop
(:mod:`prefork.worker.aio_loop`) accepts; this server never does.
"""

from __future__ import annotations

import socket
import ssl
from time import monotonic
from typing import Any, Callable, Dict, Optional

from ..edge import tls_info
from ..http.listener import HttpListener
from ..http.parser import Request
from ..wsgi import AccessLog
from .http import AsgiConnection
from .scope import base_scope, http_scope


class ASGIServer(HttpListener):
    """One listener's share of every connection; see the module docstring."""

    def __init__(self, sock: socket.socket, app: Callable, config: Any,
                 access_log: Optional[AccessLog], state: Optional[Dict[str, Any]],
                 tls: Optional[ssl.SSLContext] = None) -> None:
        super().__init__(sock, app, config, access_log)
        self.request_timeout = config.request_timeout    # enforced here: see AsgiConnection.tick
        self.state = state          # the lifespan state; each request gets a copy
        # TLS: asyncio's own TLS transport runs the handshake (the edge in front,
        # servers/edge/, has checked that the client speaks TLS at all).
        self.tls = tls
        self._server_cert = _server_pem(config.certfile) if tls is not None else None
        self.ws_max_size: int = config.ws_max_size
        self.ws_ping_interval: float = config.ws_ping_interval
        self.ws_ping_timeout: float = config.ws_ping_timeout
        self._base = base_scope(sock.getsockname(), config.root_path)
        if tls is not None:
            self._base["scheme"] = "https"

    def accepted(self, conn: socket.socket, address: Any, loop: Any,
                 deadline: Optional[float] = None) -> AsgiConnection:
        """``deadline``: when the TLS handshake must be over (the edge's, which began
        at the accept); header_timeout from now without one."""
        conn.setblocking(False)
        protocol = AsgiConnection(self, loop, address)
        ev = loop.loop
        make = getattr(ev, "_make_socket_transport", None)
        if self.tls is not None:
            left = self.header_timeout if deadline is None else max(deadline - monotonic(), 0.1)
            task = ev.create_task(ev.connect_accepted_socket(
                lambda: protocol, conn, ssl=self.tls, ssl_handshake_timeout=left))
            task.add_done_callback(lambda t: _failed_transport(t, protocol, conn))
        elif make is not None:
            # asyncio's own loop: the transport made at once, as its accept loop
            # makes it, without connect_accepted_socket's task per connection.
            make(conn, protocol, extra={"peername": address})
        else:
            task = ev.create_task(ev.connect_accepted_socket(lambda: protocol, conn))
            task.add_done_callback(lambda t: _failed_transport(t, protocol, conn))
        return protocol

    def scope(self, request: Request, connection: AsgiConnection) -> Dict[str, Any]:
        """The request's scope; from a trusted proxy, with the client and scheme its
        headers say (the address is kept for the access log)."""
        client, scheme = connection.address, None
        if connection.trusted:
            client, scheme = self.forwarded_client(request, client)
        connection.client = client
        scope = http_scope(self._base, request, client, self.state)
        if scheme is not None:
            scope["scheme"] = scheme
        if connection.tls is not None:
            scope["extensions"] = dict(scope["extensions"], tls=connection.tls)
        return scope

    def tls_extension(self, transport: Any) -> Optional[Dict[str, Any]]:
        """ASGI's ``tls`` scope extension for a connection's transport; None if plain."""
        tls = transport.get_extra_info("ssl_object")
        if tls is None:
            return None
        return tls_info.asgi_extension(tls, self._server_cert)

    def log_access(self, connection: AsgiConnection, cycle: Any) -> None:
        self._write_access(connection.client, cycle.request, cycle.code,
                           cycle.body_bytes, cycle.started)


def _failed_transport(task: Any, protocol: AsgiConnection, conn: socket.socket) -> None:
    """The client left before its transport was made: forget the connection."""
    if not task.cancelled() and task.exception() is None:
        return
    conn.close()
    protocol.closed = True
    protocol.aloop.forget(protocol)


def _server_pem(certfile: str) -> Optional[str]:
    """The server's own certificate (the first of its chain), for the scope's
    ``tls.server_cert``; None if it cannot be read (the context loaded it, though)."""
    try:
        with open(certfile, encoding="ascii", errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    end = text.find("-----END CERTIFICATE-----")
    start = text.find("-----BEGIN CERTIFICATE-----")
    if start < 0 or end < 0:
        return None
    return text[start:end + len("-----END CERTIFICATE-----")] + "\n"
