"""The server's keepalive on an open WebSocket: a ping every interval, a deadline for its pong.

A client that vanished without a FIN (a laptop lid closed, a NAT entry
dropped) leaves a connection that reads nothing forever; only a ping that
is never answered reveals it.  :class:`Keepalive` owns the two timers and
asks its session (:class:`~.websocket.WebSocketSession`) the rest: whether
it is still open, whether its last ping is unanswered, whether its reading
is paused, and to send a ping or give up.
"""

from __future__ import annotations

import asyncio
from typing import Any, Optional


class Keepalive:
    """Pings every ``interval`` seconds; ``timeout`` seconds without an answer ends it.

    0 for ``interval`` never pings; 0 for ``timeout`` waits for pongs forever.
    The session calls :meth:`start` once open, :meth:`answered` when the pong
    comes and :meth:`stop` when it closes, and sets ``heard`` whenever bytes
    arrive; the timers call the session's ``open_for_ping()``,
    ``ping_unanswered()``, ``send_ping()``, ``reading_paused`` and
    ``keepalive_failed()``.
    """

    __slots__ = ("loop", "interval", "timeout", "session", "heard", "_ping", "_pong")

    def __init__(self, loop: asyncio.AbstractEventLoop, interval: float, timeout: float,
                 session: Any) -> None:
        self.loop, self.interval, self.timeout, self.session = loop, interval, timeout, session
        self.heard = False            # bytes came since our last ping or pong deadline
        self._ping: Optional[asyncio.TimerHandle] = None
        self._pong: Optional[asyncio.TimerHandle] = None

    def start(self) -> None:
        if self.interval > 0:
            self._ping = self.loop.call_later(self.interval, self._on_interval)

    def answered(self) -> None:
        if self._pong is not None:
            self._pong.cancel()
            self._pong = None

    def stop(self) -> None:
        for timer in (self._ping, self._pong):
            if timer is not None:
                timer.cancel()
        self._ping = self._pong = None

    def _on_interval(self) -> None:
        self._ping = None
        session = self.session
        if not session.open_for_ping():
            return
        if not session.ping_unanswered():     # else the last one's deadline still runs
            session.send_ping()
            self.heard = False
            if self.timeout > 0:
                self._pong = self.loop.call_later(self.timeout, self._on_deadline)
        self.start()

    def _on_deadline(self) -> None:
        self._pong = None
        session = self.session
        if not session.open_for_ping() or not session.ping_unanswered():
            return
        if self.heard or session.reading_paused:
            # Bytes came since the ping, or its pong may wait behind messages
            # the app has not taken: not the client's fault.  Another timeout.
            self.heard = False
            self._pong = self.loop.call_later(self.timeout, self._on_deadline)
            return
        session.keepalive_failed()
