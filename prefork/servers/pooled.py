"""What a socketserver server is under prefork: one of a pool, driven by the worker's loop."""

from __future__ import annotations

import logging
import socketserver

logger = logging.getLogger("prefork")


class PooledServer(socketserver.BaseServer):
    """Base of the servers a handler class finds as ``self.server``.

    The worker's loop does what ``serve_forever`` would, and the master
    decides when to stop; a handler calling either gets told so.
    """

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        raise RuntimeError("prefork runs the serve loop; handlers must not call serve_forever()")

    def shutdown(self) -> None:
        logger.warning("%s called server.shutdown(); under prefork, stop the pool with "
                       "a signal to the master instead", self.RequestHandlerClass.__name__)
