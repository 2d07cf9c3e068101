"""What a socketserver server is under prefork: one of a pool, driven by the worker's loop."""

from __future__ import annotations

import logging
import socket
import socketserver
from typing import Any, Callable, Type

from ..addresses import client

logger = logging.getLogger("prefork")


class PooledServer(socketserver.BaseServer):
    """Base of the servers a handler class finds as ``self.server``.

    The master bound ``sock``; a worker's loop does what ``serve_forever``
    would, and the master decides when to stop, so a handler calling either
    gets told so.  Subclasses say how a request arrives (a connection, a
    datagram) and how it is closed; :meth:`serve_request` runs socketserver's
    template methods (``verify_request``, ``finish_request``,
    ``handle_error``, ``shutdown_request``) around one handler.
    """

    def __init__(self, sock: socket.socket,
                 handler_class: Type[socketserver.BaseRequestHandler]) -> None:
        super().__init__(sock.getsockname(), handler_class)
        self.socket = sock
        self.address_family = sock.family
        self.socket_type = sock.type

    def fileno(self) -> int:
        return self.socket.fileno()

    def serve_request(self, request: Any, client_address: Any) -> None:
        """Run one handler on ``request``, then close it; errors are logged, never raised."""
        try:
            if self.verify_request(request, client_address):
                self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)

    def describe(self, client_address: Any) -> Callable[[], str]:
        """What a job runs, for request_timeout's log line (formatted only if shown)."""
        return lambda: f"{self.RequestHandlerClass.__name__} for {self.name_client(client_address)}"

    def name_client(self, client_address: Any) -> str:
        return client(client_address)

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        raise RuntimeError("prefork runs the serve loop; handlers must not call serve_forever()")

    def shutdown(self) -> None:
        logger.warning("%s called server.shutdown(); under prefork, stop the pool with "
                       "a signal to the master instead", self.RequestHandlerClass.__name__)
