"""ASGI WebSocket sessions on the asyncio worker: what follows an upgrade request.

The HTTP adapter hands a GET asking for ``Upgrade: websocket`` over with
:func:`upgrade`, then forwards the transport's events to the session
(``data_received``, ``connection_lost``, ``pause_writing``,
``resume_writing``), calls ``going_away()`` on a graceful stop and awaits ``done``.

The session runs the app with the ``websocket`` scope; the handshake is
answered when the app decides (:mod:`.ws_app`).  Frames and the close
handshake are :class:`.ws_protocol.Frames`' (sans-IO); the keepalive pings
are :class:`.ws_keepalive.Keepalive`'s; here are the writes, the close
deadline and the flow control:
reading pauses while the app has not taken what came (a bounded queue),
``send`` waits while the transport's buffer is full.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any, Awaitable, Callable, Deque, Dict, List, Optional

from ...addresses import client
from ..http.parser import Request
from .ws_app import CLOSED, CLOSING, CONNECTING, OPEN, SERVICE_RESTART, AppSide
from .ws_keepalive import Keepalive
from .ws_protocol import (ABNORMAL, Frames, HandshakeError, Message, WebSocketClosed,
                          check_handshake, disconnect, websocket_scope)

logger = logging.getLogger("prefork")

App = Callable[[Dict[str, Any], Callable[[], Awaitable[Message]],
                Callable[[Message], Awaitable[None]]], Awaitable[None]]

CLOSE_TIMEOUT = 5.0           # seconds for the client to answer our close frame
# The receive queue: reading pauses at either high mark, resumes under both low ones.
QUEUE_HIGH, QUEUE_LOW = 16, 4
QUEUE_HIGH_BYTES, QUEUE_LOW_BYTES = 1 << 20, 256 << 10
EARLY_LIMIT = 64 << 10        # bytes held before the handshake is answered


def upgrade(request: Request, scope: Dict[str, Any], app: App, transport: asyncio.Transport,
            leftover: bytes, server: Any, counter: Any) -> "WebSocketSession":
    """Take over a connection whose request asks for a WebSocket; runs the app.

    ``server`` gives the settings (``ws_max_size``, ``ws_ping_interval``,
    ``ws_ping_timeout``) and the access log; ``counter`` is the worker's loop,
    told ``request_started()`` now and ``request_finished()`` when the session
    has ended, so the scoreboard shows the worker busy while a WebSocket is
    open and the session counts toward max_requests.
    """
    session = WebSocketSession(request, scope, app, transport, server, counter)
    session.start(leftover)
    return session


class WebSocketSession(AppSide):
    """One WebSocket connection, from the upgrade request to the closed transport.

    What the app calls (``receive``, ``send``) and its task are
    :class:`~.ws_app.AppSide`'s; the transport, the timers and the flow
    control are here.
    """

    def __init__(self, request: Request, http_scope: Dict[str, Any], app: App,
                 transport: asyncio.Transport, server: Any, counter: Any) -> None:
        self.loop = asyncio.get_running_loop()
        self.request, self.transport, self.app = request, transport, app
        self.scope = websocket_scope(http_scope, request)
        self.max_size: int = server.ws_max_size
        self.keepalive = Keepalive(self.loop, server.ws_ping_interval, server.ws_ping_timeout,
                                   self)
        self.access_log = server.access_log
        self.counter = counter
        counter.request_started(self)
        self.done: asyncio.Future = self.loop.create_future()
        self.state = CONNECTING
        self.status = 0                    # for the access log: 101, or the denial's
        self.sent = 0                      # bytes written, for the access log
        self.started = time.monotonic()
        self.frames: Optional[Frames] = None
        self._key = ""
        self._early = bytearray()          # bytes received before the handshake was answered
        self._chunked = False              # the denial's body goes chunked
        self._inbox: Deque[Message] = deque()
        self._inbox_bytes = 0
        self._receiver: Optional[asyncio.Future] = None
        self._disconnect: Optional[Message] = None   # queued once, then repeated to the app
        self._reading_paused = False
        self._writing_paused = False
        self._drain: List[asyncio.Future] = []
        self._close_timer: Optional[asyncio.TimerHandle] = None    # for our close frame's answer
        self._away_timer: Optional[asyncio.TimerHandle] = None     # a going_away(delay) to come
        self._going_away = self._app_done = self._lost = False
        self._task: Optional[asyncio.Future] = None

    # -- the adapter's calls ---------------------------------------------------

    def shown_as(self) -> str:
        """For top and status (show_requests): the upgrade request and its client."""
        r = self.request
        return (f'"{r.method} {r.target} {r.version}" WebSocket from '
                f"{client(self.scope.get('client') or '')}")

    def start(self, leftover: bytes) -> None:
        try:
            self._key = check_handshake(self.request)
        except HandshakeError as exc:
            # Not a WebSocket the app could accept: answered here, the app never sees it.
            self.status = exc.status
            self._write(exc.response())
            self._app_done = True
            self._close_transport()
            return
        self._queue({"type": "websocket.connect"})
        self._early += leftover
        self._task = asyncio.ensure_future(self._run())

    def data_received(self, data: bytes) -> None:
        self.keepalive.heard = True
        if self.frames is not None:
            if self.state is OPEN or self.state is CLOSING:
                self._received(data)
        elif self.state is CONNECTING:
            # RFC 6455 4.1: a client waits for the 101 before it sends frames;
            # what comes early is kept (within a bound) until the app decides.
            self._early += data
            if len(self._early) > EARLY_LIMIT:
                self._pause_reading()

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        self._lost = True
        self.state = CLOSED
        self._cancel_timers()
        if self._away_timer is not None:
            self._away_timer.cancel()
        self._queue(disconnect(ABNORMAL))      # unless a disconnect is already queued
        self._wake_senders()
        self._finish()

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._wake_senders()

    def _wake_senders(self) -> None:
        waiters, self._drain = self._drain, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def going_away(self, delay: float = 0.0) -> None:
        """Graceful stop: close with 1012 (service restart) and a close handshake, now
        or ``delay`` seconds from now (the WebSocket keeps working until then)."""
        if delay > 0:
            if self._away_timer is None and not self._lost:
                self._away_timer = self.loop.call_later(delay, self.going_away)
            return
        self._going_away = True
        if self.state is OPEN:
            self._close(SERVICE_RESTART, "service restart")
            self._queue(disconnect(SERVICE_RESTART, "service restart"))
        # CONNECTING: the app has not answered yet; an accept is closed at once.

    # -- inside ------------------------------------------------------------------

    def _received(self, data: bytes) -> None:
        frames = self.frames
        assert frames is not None
        messages = frames.receive(data)
        if frames.ping_payload is None:
            self.keepalive.answered()
        self._flush()         # pongs, the echo of a close frame, a failure's close frame
        for message in messages:
            # After our close frame, data is dropped (RFC 6455 1.4).
            if self.state is OPEN or message["type"] != "websocket.receive":
                self._queue(message)
        if self.state is OPEN and not frames.open:
            self.state = CLOSING
        if self.state is OPEN and not self._reading_paused and (
                len(self._inbox) >= QUEUE_HIGH or self._inbox_bytes >= QUEUE_HIGH_BYTES):
            self._pause_reading()

    def _queue(self, message: Message) -> None:
        if self._disconnect is not None:
            return                         # the end was told already
        if message["type"] == "websocket.disconnect":
            self._disconnect = message
        else:
            self._inbox_bytes += len(message.get("text") or message.get("bytes") or b"")
        self._inbox.append(message)
        receiver = self._receiver
        if receiver is not None and not receiver.done():
            receiver.set_result(None)

    def _close(self, code: int, reason: str = "") -> None:
        """Send a close frame; the transport closes when the client answers, or at a deadline."""
        assert self.frames is not None
        self.frames.close(code, reason)
        self.state = CLOSING
        self._flush()
        if not self._lost and self.state is CLOSING:
            self._cancel_timers()
            self._close_timer = self.loop.call_later(CLOSE_TIMEOUT, self._close_transport, True)
            if self._reading_paused and not self.transport.is_closing():
                # Messages are dropped from now on: read on to the client's close frame.
                self._reading_paused = False
                self.transport.resume_reading()

    def _flush(self) -> None:
        assert self.frames is not None
        data, eof = self.frames.data_to_send()
        if data:
            self._write(data)
        if eof:
            # The close handshake is over (or failed): nothing more to send.
            if self.state is OPEN:
                self.state = CLOSING
            self._close_transport()

    def _write(self, data: bytes) -> None:
        if not self._lost and not self.transport.is_closing():
            self.transport.write(data)
            self.sent += len(data)

    async def _drained(self) -> None:
        waiter = self.loop.create_future()
        self._drain.append(waiter)
        await waiter
        if self._lost:
            raise WebSocketClosed("the client went away during a WebSocket send")

    def _pause_reading(self) -> None:
        if not self._reading_paused and not self.transport.is_closing():
            self._reading_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if len(self._inbox) <= QUEUE_LOW and self._inbox_bytes <= QUEUE_LOW_BYTES \
                and len(self._early) <= EARLY_LIMIT:
            self._reading_paused = False
            if not self.transport.is_closing():
                self.transport.resume_reading()

    # -- what the keepalive asks (ws_keepalive.Keepalive) ----------------------

    def open_for_ping(self) -> bool:
        return self.state is OPEN and self.frames is not None

    def ping_unanswered(self) -> bool:
        return self.frames is not None and self.frames.ping_payload is not None

    def send_ping(self) -> None:
        assert self.frames is not None
        self.frames.ping()
        self._flush()

    @property
    def reading_paused(self) -> bool:
        return self._reading_paused

    def keepalive_failed(self) -> None:
        # The client is gone or stuck: a close frame it may never read, then
        # the connection is dropped (a close handshake needs a peer that answers).
        logger.info("WebSocket %s: no pong within %.3g s, closing", self._describe(),
                    self.keepalive.timeout)
        assert self.frames is not None
        self.frames.fail(1011, "keepalive ping timeout")
        self._flush()
        self._close_transport(abort=True)

    def _cancel_timers(self) -> None:
        self.keepalive.stop()
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None

    def _close_transport(self, abort: bool = False) -> None:
        self._cancel_timers()
        if self._lost:
            return
        if abort:
            self.transport.abort()          # drops what is buffered: the peer is not reading
        elif not self.transport.is_closing():
            self.transport.close()          # after what is buffered has been written
            if self.transport.get_write_buffer_size():
                # ...unless the client stopped reading: then not forever.
                self._close_timer = self.loop.call_later(CLOSE_TIMEOUT, self._close_transport,
                                                         True)

    def _finish(self) -> None:
        """Once both the app and the connection have ended: log, count, resolve ``done``."""
        if not (self._app_done and self._lost) or self.done.done():
            return
        self.done.set_result(None)
        if self.access_log is not None:
            self.access_log.write(self.scope.get("client"), self.request, self.status or 500,
                                  self.sent, time.monotonic() - self.started)
        self.counter.request_finished(self)
