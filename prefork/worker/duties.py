"""What every worker loop does the same way, whatever it runs on.

:class:`LoopDuties` is mixed into the selector loop (:class:`.loop.ServeLoop`)
and the asyncio loop (:class:`.aio_loop.AsyncioLoop`): the state both keep,
``park``, a batch of accepts from a stream listener, the graceful stop, the
worker's signals (TERM: graceful stop; anything else goes to ``on_signal``)
and the master's death.  As in CPython's socketserver, the
steps that depend on the loop are template methods the loop overrides:

- :meth:`LoopDuties._unwatch_alive`: stop watching the master's alive pipe;
- :meth:`LoopDuties._accept`: accept (at most ``limit``) from one listener;
- :meth:`LoopDuties._listen`: watch the listeners, or stop watching them;
- :meth:`LoopDuties._has_room`: may another connection be accepted now;
- :meth:`LoopDuties._close_server`: close this worker's copy of a listener;
- :meth:`LoopDuties._stopping_begun`: what follows once connections were told;
- :meth:`LoopDuties._hurried`: what follows once idle connections were hurried.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from typing import Any, Callable, Optional, Set

from ..scoreboard import DRAINING, WorkerSlot
from ..servers.contracts import Parked
from .accepting import FD_PAUSE, accept_batch, drain_size

logger = logging.getLogger("prefork")

IDLE_WAIT = 0.5      # an orphan's idle keep-alive clients get this long for one more request


class LoopDuties:
    """The shared part of a worker loop; see the module docstring."""

    def _init_duties(self, slot: WorkerSlot, signals: Any, alive_fd: int,
                     graceful_timeout: float, on_signal: Callable[[int], None],
                     on_request_done: Callable[[], None], max_connections: int) -> None:
        self.slot = slot
        self.signals = signals
        self.alive_fd = alive_fd
        self.graceful_timeout = graceful_timeout
        self.on_signal = on_signal
        self.on_request_done = on_request_done
        self.max_connections = max_connections
        self.master_pid = os.getppid()
        self.connections: Set[Parked] = set()
        self.stopping = False
        self._listening = False
        self._resume_at = 0.0

    # -- template methods --------------------------------------------------

    def _unwatch_alive(self) -> None:
        raise NotImplementedError

    def _accept(self, server: Any, limit: Optional[int] = None) -> None:
        raise NotImplementedError

    def _has_room(self) -> bool:
        raise NotImplementedError

    def _listen(self, on: bool) -> None:
        raise NotImplementedError

    def _close_server(self, server: Any) -> None:
        server.server_close()

    def _stopping_begun(self) -> None:
        """Connections have been told to stop."""

    def _hurried(self, soon: float) -> None:
        """Idle connections have been given until ``soon``."""

    # -- the duties ----------------------------------------------------------

    def park(self, connection: Parked) -> None:
        self.connections.add(connection)

    def _accept_batch(self, server: Any, batch: int, limit: Optional[int]) -> None:
        """Accept up to ``batch`` from a stream listener while there is room (with
        ``limit``: regardless); on an accept error, pause listening for FD_PAUSE."""
        room = self._has_room if limit is None else always
        if not accept_batch(self._accepters[id(server)], batch, room,
                            lambda conn, address: server.accepted(conn, address, self)):
            self._listen(False)
            self._resume_at = time.monotonic() + FD_PAUSE
        if not self._has_room():
            self._listen(False)

    def stop(self, reason: str) -> None:
        """Begin a graceful stop: drain the accept queue, drop the listeners."""
        if self.stopping:
            return
        logger.info("stopping gracefully (%s)", reason)
        self.slot.set_state(DRAINING)
        self.deadline = time.monotonic() + self.graceful_timeout
        # Serve what was queued when the stop began, not what keeps arriving:
        # under steady load an open-ended drain would never end.
        for server in self.servers:
            self._accept(server, limit=drain_size(server.socket))
        self._listen(False)
        self.stopping = True
        for server in self.servers:
            self._close_server(server)
        for connection in list(self.connections):
            connection.stop()
        self._stopping_begun()

    def _on_signals(self) -> None:
        for sig in self.signals.read():
            if sig == signal.SIGTERM:
                self.stop("TERM")
            else:
                self.on_signal(sig)

    def _on_master_gone(self) -> None:
        self._unwatch_alive()
        self.stop("the master is gone")
        # An orphan leaves once its in-flight requests are done: an idle
        # keep-alive client gets IDLE_WAIT to send one more request (answered
        # with Connection: close), not its whole keep-alive deadline as on a
        # TERM.
        soon = time.monotonic() + IDLE_WAIT
        for connection in list(self.connections):
            connection.hurry(soon)
        self._hurried(soon)


def always() -> bool:
    """Room for one more, whatever the count (a graceful stop's drain)."""
    return True
