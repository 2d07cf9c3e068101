"""Serving ``socketserver`` handler classes over datagram sockets, inside a worker.

:class:`DatagramServer` is to ``socketserver.UDPServer`` (and
``UnixDatagramServer``) what :class:`~prefork.servers.stream.HandlerServer`
is to ``TCPServer``: a real :class:`socketserver.BaseServer` whose socket is
a datagram socket the master bound (``udp://`` or ``unix-dgram:``).  Each
datagram is one request: the handler gets ``self.request == (data, socket)``
and ``self.client_address == sender``, exactly as under UDPServer, so a
``socketserver.DatagramRequestHandler`` subclass (its ``wfile`` goes back
to the sender in ``finish()``) or a plain ``BaseRequestHandler`` works
unchanged.

Only the loop differs: every worker waits on the same socket; when it is
readable the worker's loop calls :meth:`DatagramServer.get_request` (a
non-blocking ``recvfrom``: losing the race to another worker is normal) and
:meth:`DatagramServer.received`, which runs the handler inline (sync worker)
or on the thread pool (thread worker).

Override in a subclass, as with socketserver: ``verify_request`` to drop
datagrams from some senders, ``handle_error`` to report errors differently.
"""

from __future__ import annotations

import logging
import socket
import socketserver
from typing import Any, Tuple, Type

from .contracts import Loop
from .pooled import PooledServer
from ..addresses import client

logger = logging.getLogger("prefork")

Request = Tuple[bytes, socket.socket]


def sender(address: Any) -> str:
    """How a log line names a datagram's sender (an unbound unix-dgram client has none)."""
    return client(address) if address else "an unbound client"


class DatagramServer(PooledServer):
    """socketserver's UDPServer API over a datagram socket the master already bound.

    The socket is shared by every worker and stays non-blocking: a handler's
    ``sendto`` that finds the send buffer (or a unix-dgram client's queue)
    full raises ``BlockingIOError``, which is logged and the reply lost, as
    a datagram may be, instead of blocking the worker on one slow client.
    """

    datagram = True        # the loop reads datagrams from it instead of accepting

    def __init__(self, sock: socket.socket, handler_class: Type[socketserver.BaseRequestHandler],
                 max_packet_size: int = 8192) -> None:
        super().__init__(sock, handler_class)
        self.max_packet_size = max_packet_size
        self.busy = 0          # handlers running; only the loop's thread touches it
        self.closing = False

    def get_request(self) -> Tuple[Request, Any]:
        """One datagram, cut to ``max_packet_size`` as UDPServer does.

        BlockingIOError when none is queued: another worker took it first.
        """
        data, client_address = self.socket.recvfrom(self.max_packet_size)
        return (data, self.socket), client_address

    def received(self, request: Request, client_address: Any, loop: Loop) -> None:
        """The worker loop read ``request``: run a handler on it, inline or on a thread."""
        self.busy += 1
        loop.run_job(lambda: self.serve_request(request, client_address), self._handled,
                     what=self.describe(client_address))

    def name_client(self, client_address: Any) -> str:
        return sender(client_address)

    def _handled(self) -> None:
        self.busy -= 1
        if self.closing and not self.busy:
            self.socket.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.exception("error in %s while serving a datagram from %s",
                         self.RequestHandlerClass.__name__, self.name_client(client_address))

    def shutdown_request(self, request: Any) -> None:
        # The socket is the shared one, not a per-request connection: nothing
        # to shut down or close (UDPServer's close_request does nothing either).
        self.close_request(request)

    def close_request(self, request: Any) -> None:
        pass

    def close_idle(self, min_wait: float) -> None:
        """Nothing to do: no connection sits idle between two datagrams."""

    def server_close(self) -> None:
        """Drop this worker's copy of the socket once its handlers are done.

        Replies leave through this very socket, so a handler still running on
        a thread (graceful stop) must find it open; the loop has already
        stopped reading from it.
        """
        self.closing = True
        if not self.busy:
            self.socket.close()
