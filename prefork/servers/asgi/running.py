"""The app's side of an ASGI HTTP connection: its task, its calls, how its response ends.

:class:`AppRunning` is mixed into :class:`~.http.AsgiConnection` (the
``asyncio.Protocol`` that drives the sans-IO protocol on the transport).
It holds what a request's :class:`~.cycle.Cycle` calls on its connection
(``pull`` for the body, ``body_taken``, ``respond``, ``drained``) and the
app's task: run, failed (a 500, or a reset once the head is sent), cut
short by request_timeout (504 or a reset), finished (the access log), and
a pathsend's file sent.  It drives the protocol only through the
connection's ``_drive``, ``_reset`` and ``_set_reading``.
"""

from __future__ import annotations

import asyncio
import logging
from time import monotonic
from typing import Any, List

from ...addresses import client
from ..http.response import error_response
from .cycle import ClientDisconnected, Cycle

logger = logging.getLogger("prefork")

FILE_BLOCK = 256 * 1024       # read-and-write blocks of a pathsend where sendfile is not had


class AppRunning:
    """The request side of :class:`~.http.AsgiConnection`; see the module docstring."""

    __slots__ = ()

    # Set by the connection: server, aloop, loop, address, transport, proto,
    # cycle, reading, write_paused, closed, sending_file.
    _drains: List[asyncio.Future]

    # -- what the cycle calls --------------------------------------------------

    def pull(self, cycle: Cycle) -> None:
        """The app's first receive(): the body (and its 100 Continue) now."""
        if cycle is self.cycle and self.proto.in_body and not self.closed:
            self._drive(self.proto.next(monotonic()))

    def body_taken(self, cycle: Cycle) -> None:
        if cycle is self.cycle and not self.reading:
            self._set_reading()

    def respond(self, cycle: Cycle, data: bytes, done: bool, file: Any = None) -> None:
        if cycle is not self.cycle or self.closed:
            return      # the connection went, or this response was cut short already
        if file is None:
            self._drive(self.proto.respond(data, done, cycle.keep_alive))
            return
        handle, count, sent = file
        cycle.file = (handle, count, sent)
        self._drive(self.proto.respond(data, done, cycle.keep_alive,
                                       (handle.fileno(), 0, count) if count else None))
        if not count and not sent.done():
            sent.set_result(None)

    async def drained(self, cycle: Cycle) -> None:
        """Wait while the transport is above its high-water mark."""
        while self.write_paused and not self.closed:
            waiter = self.loop.create_future()
            self._drains.append(waiter)
            await waiter
        if self.closed and not cycle.response_done:
            raise ClientDisconnected("the client closed the connection")

    def _wake_drains(self) -> None:
        drains, self._drains = self._drains, []
        for waiter in drains:
            if not waiter.done():
                waiter.set_result(None)

    # -- the app's task and how its response ends ---------------------------------

    async def _run(self, cycle: Cycle) -> None:
        try:
            await self.server.app(cycle.scope, cycle.receive, cycle.send)
        except ClientDisconnected:
            pass
        except asyncio.CancelledError:
            self._failed(cycle)
            raise
        except Exception:
            if not cycle.disconnected:
                logger.exception("error in the ASGI app serving %s from %s", cycle.describe(),
                                 client(self.address))
            self._failed(cycle)
        else:
            if not cycle.response_done and not cycle.disconnected:
                logger.error("the ASGI app returned without completing its response to %s "
                             "from %s", cycle.describe(), client(self.address))
                self._failed(cycle)
        finally:
            self.aloop.request_finished(cycle)

    def _failed(self, cycle: Cycle) -> None:
        """A 500 if nothing was sent; a reset if the response had started."""
        if cycle is self.cycle and not self.closed and not cycle.response_done:
            self._cut(cycle, 500)

    def _cut(self, cycle: Cycle, status: int) -> None:
        """End ``cycle``'s response for the server: ``status`` if its head is still to
        be written, else a reset (only that tells the client its response is short)."""
        cycle.response_done = True
        if not cycle.head_sent:
            cycle.code = status
            body = error_response(status)
            cycle.body_bytes = len(body)
            self._drive(self.proto.respond(body, True, False))
        else:
            self.proto.abort()
            self._reset()
            self._finished()

    def _time_out(self, cycle: Cycle, limit: float) -> None:
        """request_timeout: cancel the app's task; 504 if nothing was sent, else a reset.
        The worker and its other requests live on."""
        logger.error("request_timeout (%g s) passed: cancelling %s from %s, which was "
                     "awaiting:\n%s", limit, cycle.describe(), client(self.address),
                     cycle.stack())
        self._cut(cycle, 504)
        if cycle.task is not None:
            cycle.task.cancel()

    def _finished(self) -> None:
        cycle = self.cycle
        if cycle is None:
            return
        self.cycle = None
        cycle.finished()
        if self.server.access_log is not None:
            self.server.log_access(self, cycle)

    async def _send_file(self) -> None:
        """SENDFILE: the file range the protocol holds, then sent_file()."""
        cycle = self.cycle
        handle, count, sent = cycle.file
        _fd, offset, left = self.proto.file
        try:
            try:
                await self.loop.sendfile(self.transport, handle, offset, left)
            except NotImplementedError:       # uvloop: read and write
                handle.seek(offset)
                while left and not self.closed:
                    block = handle.read(min(FILE_BLOCK, left))
                    if not block:
                        break
                    self.transport.write(block)
                    left -= len(block)
                    await self.drained(cycle)
        except (OSError, RuntimeError):
            if not self.closed:
                self._reset()      # part of the body may have left: only a reset tells
            return
        finally:
            self.sending_file = False
            if not sent.done():
                sent.set_result(None)
        if not self.closed:
            self._drive(self.proto.sent_file(self.proto.file[2], monotonic(), ended=True))
