"""Serving ``socketserver`` stream handler classes, unchanged, inside a worker.

A handler expects ``self.server`` to be a socketserver server.  A worker
builds one :class:`HandlerServer` per inherited listener: a real
:class:`socketserver.BaseServer` whose socket is that listener, so handlers
find ``server_address``, ``socket``, ``RequestHandlerClass`` and the
``finish_request`` / ``handle_error`` / ``shutdown_request`` template methods
where socketserver puts them.  Only the loop is different: the worker's
selector loop accepts, and calls :meth:`~.pooled.PooledServer.serve_request`
inline (sync worker) or from its thread pool (thread worker).

Override in a subclass, as with socketserver: ``verify_request`` to refuse
clients, ``handle_error`` to report errors differently.
"""

from __future__ import annotations

import logging
import socket
import socketserver
import ssl
import time
from typing import Any, Callable, Optional, Set, Type

from .contracts import Loop, RequestTimer
from .edge.tls import close_notify
from .pooled import PooledServer


logger = logging.getLogger("prefork")


class Tracking:
    """An accepted connection that knows whether its handler is waiting to read.

    A handler blocked in recv after it has replied is, for a keep-alive
    protocol, idle between two requests: on a graceful stop that is the
    moment to end it (shutdown(SHUT_RD) makes the recv return EOF), instead
    of waiting idle_timeout for the client to go away.  One that has not
    replied yet is waiting for a first request and is left alone.

    Mixed into a socket class: :class:`TrackedSocket` for plain
    connections, :class:`TrackedSSLSocket` for TLS ones (the TLS context of
    a worker serving handler classes makes its sockets of that class).
    """

    __slots__ = ()
    # Defaults for the TLS class, whose instances ssl makes without __init__.
    waiting_since = 0.0
    replied = False              # only after a reply is a wait "between requests"
    # request_timeout: a handler waiting for its client is not running.
    inflight: Optional[RequestTimer] = None

    def send(self, *args: Any) -> int:
        self.replied = True
        return super().send(*args)

    def sendall(self, *args: Any) -> None:
        self.replied = True
        return super().sendall(*args)

    def recv(self, *args: Any) -> bytes:
        return self._waiting(super().recv, args)

    def recv_into(self, *args: Any) -> int:
        return self._waiting(super().recv_into, args)

    def _waiting(self, read: Callable[..., Any], args: Any) -> Any:
        """Read, marked as waiting for the client: idle for a graceful stop, and
        not running for request_timeout."""
        self.waiting_since = time.monotonic()
        timer = self.inflight
        if timer is not None:
            timer.pause()
        try:
            return read(*args)
        finally:
            self.waiting_since = 0.0
            if timer is not None:
                timer.resume()


class TrackedSocket(Tracking, socket.socket):
    """A plain connection, tracked."""

    __slots__ = ("waiting_since", "replied", "inflight")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.waiting_since = 0.0
        self.replied = False
        self.inflight = None

    @classmethod
    def adopt(cls, conn: socket.socket) -> "Tracking":
        if isinstance(conn, Tracking):
            return conn          # a TLS connection, made tracked by its context
        return cls(conn.family, conn.type, conn.proto, fileno=conn.detach())


class TrackedSSLSocket(Tracking, ssl.SSLSocket):
    """A TLS connection, tracked; already through its handshake when a handler gets it."""


class HandlerServer(PooledServer):
    """socketserver's server API over a listener the master already bound."""

    def __init__(self, sock: socket.socket, handler_class: Type[socketserver.BaseRequestHandler],
                 idle_timeout: float = 0.0) -> None:
        super().__init__(sock, handler_class)
        self.idle_timeout = idle_timeout
        self.open: Set[TrackedSocket] = set()
        self.stopping = False
        # What http.server.HTTPServer adds; SERVER_NAME-style code reads these.
        self.server_name = str(self.server_address[0])
        self.server_port = self.server_address[1]

    def accepted(self, conn: socket.socket, client_address: Any, loop: Loop) -> None:
        """The worker loop accepted ``conn``: hand it to a handler, inline or on a thread."""
        conn = TrackedSocket.adopt(conn)
        conn.inflight = loop.inflight
        self.prepare(conn)
        self.open.add(conn)
        loop.run_job(lambda: self.serve_request(conn, client_address),
                     lambda: self.open.discard(conn), what=self.describe(client_address))

    def close_idle(self, min_wait: float) -> None:
        """Graceful stop: end connections whose handler waits for input (see TrackedSocket).

        ``min_wait``: only those waiting at least that long, so a client in
        the middle of sending is not cut off by a pause of a few ms.  Safe
        from a signal handler: one syscall per idle connection, no locks.
        """
        self.stopping = True
        now = time.monotonic()
        for conn in list(self.open):
            since = conn.waiting_since
            if since and conn.replied and now - since >= min_wait:
                try:
                    conn.shutdown(socket.SHUT_RD)
                except OSError:
                    pass

    def prepare(self, conn: socket.socket) -> None:
        """Make an accepted connection ready for a blocking handler."""
        # TCP_NODELAY comes from the listener (sockets.set_nodelay): without it
        # http.server's separate header and body writes would cost ~40 ms per
        # keep-alive response (Nagle + delayed ACK).
        conn.setblocking(True)
        if self.idle_timeout:
            conn.settimeout(self.idle_timeout)

    def handle_error(self, request: object, client_address: object) -> None:
        logger.exception("error in %s while serving %s",
                         self.RequestHandlerClass.__name__, self.name_client(client_address))

    def shutdown_request(self, request: socket.socket) -> None:
        close_notify(request)      # TLS: its own "done writing" first
        try:
            # Tell the client we are done writing before the close, as TCPServer does.
            request.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        self.close_request(request)

    def close_request(self, request: socket.socket) -> None:
        request.close()

    def server_close(self) -> None:
        """The listener belongs to the master; a worker only drops its copy."""
        self.socket.close()

