"""One HTTP connection on the asyncio worker: an ``asyncio.Protocol`` around :class:`HttpProtocol`.

Every rule (keep-alive, pipelining, 100-continue, limits, deadlines, how
a connection ends) is the sans-IO protocol's (:mod:`..http.protocol`); this
adapter performs its actions on the transport, the same actions as the
selector adapter (:mod:`..http.connection`) performs on a socket, with
three differences that come from asyncio:

- The app starts at REQUEST_HEAD, as a task (:mod:`.cycle`; the task and
  what its cycle calls on this connection are :mod:`.running`'s), and the body
  is pulled for it: ``next()`` is first called from the app's first
  ``receive()``, so ``100 Continue`` goes out only if the app reads.  Body
  bytes wait in the cycle's queue; above BODY_HIGH bytes the transport
  stops reading, so a slow app never makes the worker buffer without bound.
- The transport reads all the time (a client that goes away is seen while
  its app runs: ``http.disconnect``), except while the body queue is full
  or pipelined requests pile up beyond PIPELINE_HIGH bytes.
- Sends never block: the transport buffers.  Bytes beyond its high-water
  mark are reported to the protocol as not yet sent, so it waits in WRITE
  and its client_timeout resets a reader that stalls; the app's ``send()``
  waits meanwhile.

WebSocket hand-over: when the protocol reports a complete head (REQUEST or
REQUEST_HEAD) of a GET with ``Upgrade: websocket`` and ``Connection:
upgrade``, and ``prefork.servers.asgi.websocket`` imports, this adapter
calls ``websocket.upgrade(request, scope, app, transport, leftover,
server, aloop)``: the parsed Request, the ``http`` scope built for it, the
ASGI app, the (reading) transport, the bytes the client sent after the
head, the :class:`~.server.ASGIServer` and the worker's loop (which counts
the session as a request).  It returns the object that owns the
connection from then on (None declines: plain HTTP).  This adapter stays
the transport's protocol and forwards ``data_received``,
``connection_lost``, ``pause_writing`` and ``resume_writing``, and calls
``going_away()`` on a graceful stop or when the worker is orphaned; a
client's EOF closes the transport.  The connection stays counted
(``worker_connections``) and a graceful stop waits for it until
``graceful_timeout``.  Without the module, such requests are plain HTTP.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from time import monotonic
from typing import Any, List, Optional

from ..http.protocol import (BODY_DATA, CLOSE, CLOSED, FINISHED, LATE_READ, LINGER, PRODUCE,
                             REJECT, REQUEST, REQUEST_HEAD, RESET, SEND, SEND_CONTINUE,
                             SENDFILE, WAIT, WANT_READ, WRITE, HttpProtocol)
from ..http.response import CONTINUE
from .cycle import BODY_HIGH, Cycle
from .running import AppRunning
from .scope import wants_websocket

PIPELINE_HIGH = 64 * 1024     # pipelined request bytes held while a response is under way
WEBSOCKET_MARGIN = 1.0        # seconds before graceful_timeout's end a WebSocket is closed
_RESET = struct.pack("ii", 1, 0)   # struct linger {l_onoff 1, l_linger 0}: close sends RST


class AsgiConnection(AppRunning, asyncio.Protocol):
    """Drive one client connection through requests; see the module docstring.

    What the app's task and its cycle call, and how a response ends, is
    :class:`~.running.AppRunning`'s.
    """

    __slots__ = ("server", "aloop", "loop", "address", "client", "trusted", "tls", "transport",
                 "proto", "cycle", "reading", "write_paused", "closed", "unsent", "sending_file",
                 "handover", "eof_seen", "_drains")

    def __init__(self, server: Any, aloop: Any, address: Any) -> None:
        self.server = server
        self.aloop = aloop
        self.loop = aloop.loop
        self.address = address
        self.client = address          # the current request's (a trusted proxy may say)
        self.trusted = server.trusts(address)
        self.tls: Any = None           # the scope's tls extension, on a TLS connection
        self.transport: Any = None
        self.proto = HttpProtocol(server.limits, server.header_timeout, server.client_timeout,
                                  server.keepalive, monotonic())
        self.cycle: Optional[Cycle] = None
        self.reading = True
        self.write_paused = False
        self.closed = False
        self.unsent = 0            # bytes in the transport's buffer the protocol counts unsent
        self.sending_file = False
        self.handover: Any = None
        self.eof_seen = False
        self._drains: List[asyncio.Future] = []
        aloop.park(self)           # counted from now, for worker_connections

    # -- asyncio.Protocol ------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        if self.server.tls is not None:
            self.tls = self.server.tls_extension(transport)

    def data_received(self, data: bytes) -> None:
        if self.handover is not None:
            self.handover.data_received(data)
            return
        self._drive(self.proto.received(data, monotonic()))

    def eof_received(self) -> Optional[bool]:
        if self.handover is not None:
            return False           # the transport closes; the handler hears connection_lost
        self.eof_seen = True
        cycle, proto = self.cycle, self.proto
        if cycle is not None and proto.in_body and not cycle.pulled and proto.parser.buffered:
            cycle.pulled = True    # a body complete before the EOF is still the app's
            self._drive(proto.next())     # its WAIT hears the EOF (see _drive)
        else:
            self._drive(proto.eof())
        cycle = self.cycle
        if cycle is not None and not proto.in_body:
            cycle.peer_gone()
        # Half-closed: our side stays open for the response.  (asyncio's TLS
        # transport cannot half-close, and says so if asked.)
        return self.tls is None

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self.closed = True
        self.proto.close()
        if self.handover is not None:
            self.handover.connection_lost(exc)
        cycle = self.cycle
        if cycle is not None:
            cycle.disconnect()
        self._wake_drains()
        self.aloop.forget(self)

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.handover is not None:
            self.handover.pause_writing()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.handover is not None:
            self.handover.resume_writing()
            return
        self._wake_drains()
        if self.proto.state == WRITE:
            self._drive(self.proto.writable())

    # -- the loop's calls (contracts.Parked) -----------------------------------

    def tick(self, now: float) -> None:
        if self.handover is not None or self.closed or self.transport is None:
            return        # (no transport yet: a TLS handshake, under its own deadline)
        cycle, limit = self.cycle, self.server.request_timeout
        if limit and cycle is not None and not cycle.response_done and now - cycle.started > limit:
            self._time_out(cycle, limit)
            return
        action = self.proto.tick(now)
        if action == WAIT:
            return
        if action == LATE_READ:
            cycle = self.cycle
            if self.proto.in_body and cycle is not None and (not cycle.pulled or not self.reading):
                # The app holds the body back (it has not asked for it, or has
                # not taken what came): the client is not the one stalling.
                return
            # Otherwise what the client sent has been delivered already (the
            # transport reads whenever it may): the deadline holds.
            action = self.proto.expire()
        self._drive(action)

    def stop(self) -> None:
        if self.handover is not None:
            # A WebSocket keeps working through graceful_timeout, and is closed
            # (1012) a moment before it ends, so its close handshake completes.
            left = self.aloop.deadline - monotonic() - WEBSOCKET_MARGIN
            self.handover.going_away(max(left, 0.0))
            return
        if self.proto.stop():
            cycle = self.cycle
            if cycle is not None and not cycle.head_sent:
                cycle.keep_alive = False    # its head, still to come, says close

    def hurry(self, deadline: float) -> None:
        if self.handover is not None:
            self.handover.going_away()
            return
        self.proto.hurry(deadline)

    # -- the protocol's actions --------------------------------------------------

    def _drive(self, action: int) -> None:
        """Perform ``action`` and the ones that follow, until the protocol waits."""
        proto = self.proto
        while True:
            if action == SEND:
                out = proto.out
                count = len(out)
                if self.unsent:
                    self.unsent = 0    # already in the transport's buffer (resume_writing)
                else:
                    self.transport.write(out)
                    if self.write_paused:
                        left = min(count, self.transport.get_write_buffer_size())
                        self.unsent = left
                        count -= left
                action = proto.sent(count, monotonic())
            elif action == WAIT:
                if self.eof_seen and proto.wants & WANT_READ:
                    # The EOF came once, before this state wanted to read: the
                    # protocol hears it again now (a pipelined head or body cut short).
                    action = proto.eof()
                    continue
                self._set_reading()
                return
            elif action == REQUEST:
                cycle = self.cycle
                if cycle is not None and cycle.body_open:
                    cycle.body_end()          # the end of a body the app is reading
                else:
                    self._start(False)
                action = WAIT
            elif action == FINISHED:
                self._finished()
                action = proto.finish(monotonic())
            elif action == PRODUCE:
                self._set_reading()
                return                        # the app's send() returns; it sends more
            elif action == REQUEST_HEAD:
                self._start(True)
                cycle = self.cycle
                if cycle is not None and not proto.request.expect_continue:
                    cycle.pulled = True       # no 100 Continue to hold back: read on
                    action = proto.next()
                else:
                    action = WAIT             # next() waits for the app's first receive()
            elif action == BODY_DATA:
                if self.cycle is not None:
                    self.cycle.body_chunk(proto.data)
                action = proto.next()
            elif action == SEND_CONTINUE:
                self.transport.write(CONTINUE)
                action = proto.next()
            elif action == SENDFILE:
                self.sending_file = True
                self.loop.create_task(self._send_file())
                return
            elif action == REJECT:
                self.server.log_rejection(self, proto.status)
                action = SEND
            elif action == LATE_READ:
                action = proto.expire()
            elif action == LINGER:
                if self.transport.can_write_eof():
                    self.transport.write_eof()    # after what is buffered
                self._set_reading()
                return
            elif action == RESET:
                self._reset()
                return
            else:
                assert action == CLOSE, action
                self.transport.close()            # after what is buffered
                return
            if self.closed:
                return

    def _set_reading(self) -> None:
        proto = self.proto
        if self.sending_file or self.closed or proto.state == CLOSED:
            return
        if proto.in_body:
            cycle = self.cycle
            want = cycle is None or cycle.pending < BODY_HIGH
        else:
            want = proto.parser.buffered < PIPELINE_HIGH
        if want != self.reading:
            self.reading = want
            if want:
                self.transport.resume_reading()
            else:
                self.transport.pause_reading()

    def _start(self, body: bool) -> None:
        """A request head is complete: its app task starts (or a WebSocket takes over)."""
        proto = self.proto
        request = proto.request
        server = self.server
        scope = server.scope(request, self)
        if request.upgrade and wants_websocket(request) and self._hand_over(request, scope):
            return
        self.cycle = cycle = Cycle(self, request, scope, body, proto.keep_alive, proto.started)
        cycle.peer_closed = self.eof_seen     # pipelined before the client's EOF
        self.aloop.request_started(cycle)
        cycle.task = self.loop.create_task(self._run(cycle))

    # -- closing ---------------------------------------------------------------

    def _hand_over(self, request: Any, scope: Any) -> bool:
        try:
            from . import websocket    # built apart; absent: plain HTTP
        except ImportError:
            return False
        leftover = self.proto.parser.take_buffered()
        handler = websocket.upgrade(request, scope, self.server.app, self.transport, leftover,
                                    self.server, self.aloop)
        if handler is None:
            self.proto.parser.feed(leftover)
            return False
        self.handover = handler
        return True

    def _reset(self) -> None:
        """Close with a reset (SO_LINGER 0): nothing buffered is sent, the client sees RST."""
        sock = self.transport.get_extra_info("socket")
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
        except (OSError, AttributeError):
            pass
        self.proto.close()
        self.transport.abort()
