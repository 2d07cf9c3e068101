"""A worker's serve loop: one thread, one selector, socketserver's serve_forever generalized.

The selector watches the listeners, the worker's signal pipe, the master's
alive pipe (EOF = the master is gone) and the dispatcher's done pipe.  Each
registered key's ``data`` is the callback to run when it is readable, so a
protocol that parks connections in the loop (HTTP keep-alive) registers its
own callbacks the same way.

Graceful stop (TERM, or the master gone): accept what the kernel already
queued, close this worker's copy of the listeners, finish what is in flight,
exit.  The master enforces graceful_timeout; the loop enforces it too, for
the case where there is no master left to do it.
"""

from __future__ import annotations

import errno
import logging
import os
import selectors
import signal
import socket
import time
from typing import Any, Callable, List, Optional

from ..scoreboard import DRAINING, READY, WorkerSlot
from ..sockets import accept_queue_length

logger = logging.getLogger("prefork")

TICK = 1.0
DRAIN_UNKNOWN = 64   # connections to drain where the OS does not report its queue
FD_PAUSE = 0.5   # seconds to stop accepting after running out of file descriptors
# accept() errors that mean "this connection is gone" or "try later", not a bug.
_TRANSIENT_ACCEPT = {errno.ECONNABORTED, errno.EPROTO, errno.EPERM, errno.EINTR}
_OUT_OF_FDS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


class ServeLoop:
    """Run until stopped.  ``servers`` each have ``.socket``, ``.prepare(conn)``
    and ``.serve_connection(conn, addr)``; ``dispatcher`` runs connections."""

    def __init__(self, servers: List[Any], dispatcher: Any, slot: WorkerSlot,
                 signals: Any, alive_fd: int, graceful_timeout: float,
                 on_signal: Callable[[int], None], on_request_done: Callable[[], None]) -> None:
        self.servers = servers
        self.dispatcher = dispatcher
        self.slot = slot
        self.signals = signals
        self.alive_fd = alive_fd
        self.graceful_timeout = graceful_timeout
        self.on_signal = on_signal
        self.on_request_done = on_request_done
        self.master_pid = os.getppid()
        self.selector = selectors.DefaultSelector()
        self.stopping = False
        self.deadline: Optional[float] = None
        self._listening = False
        self._resume_at = 0.0

    # -- setup -----------------------------------------------------------

    def open(self) -> None:
        self.selector.register(self.signals.fileno(), selectors.EVENT_READ, self._on_signals)
        self.selector.register(self.alive_fd, selectors.EVENT_READ, self._on_master_gone)
        done_fd = self.dispatcher.fileno()
        if done_fd is not None:
            self.selector.register(done_fd, selectors.EVENT_READ, self._on_done)
        self._listen(True)
        self.slot.set_state(READY)

    def _listen(self, on: bool) -> None:
        if on == self._listening or (on and self.stopping):
            return
        for server in self.servers:
            if on:
                self.selector.register(server.socket, selectors.EVENT_READ,
                                       lambda s=server: self._accept(s))
            else:
                self.selector.unregister(server.socket)
        self._listening = on

    # -- the loop --------------------------------------------------------

    def run(self) -> None:
        while True:
            now = time.monotonic()
            self.slot.heartbeat(now)
            if self.stopping and (self.dispatcher.idle() or now >= self.deadline):
                if not self.dispatcher.idle():
                    logger.warning("graceful_timeout passed with %d connection(s) in flight; "
                                   "exiting", self.dispatcher.busy)
                return
            if not self._listening and self.dispatcher.has_room() and now >= self._resume_at:
                self._listen(True)
            for key, _ in self.selector.select(TICK):
                key.data()
            if os.getppid() != self.master_pid and not self.stopping:
                self._on_master_gone()

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
            queued = accept_queue_length(server.socket)
            self._accept(server, limit=DRAIN_UNKNOWN if queued is None else queued)
        self._listen(False)
        self.stopping = True
        for server in self.servers:
            server.server_close()

    # -- callbacks -------------------------------------------------------

    def _accept(self, server: Any, limit: Optional[int] = None) -> None:
        """Accept a batch while there is room; with ``limit``, up to that many regardless."""
        batch = self.dispatcher.accept_batch if limit is None else limit
        while batch > 0 and (limit is not None or self.dispatcher.has_room()):
            try:
                conn, address = server.socket.accept()
            except BlockingIOError:
                break   # another worker won the race, or the queue is empty
            except OSError as exc:
                if exc.errno in _TRANSIENT_ACCEPT:
                    continue
                if exc.errno in _OUT_OF_FDS:
                    logger.error("accept failed: %s; pausing accepts for a moment", exc.strerror)
                    self._listen(False)
                    self._resume_at = time.monotonic() + FD_PAUSE
                    break
                raise
            batch -= 1
            self._dispatch(server, conn, address)
        if not self.dispatcher.has_room():
            self._listen(False)

    def _dispatch(self, server: Any, conn: socket.socket, address: Any) -> None:
        try:
            server.prepare(conn)
        except OSError:
            conn.close()  # the client left between accept and here
            return
        self.dispatcher.submit(server, conn, address)
        if self.dispatcher.fileno() is None:   # ran inline: done already
            self.slot.heartbeat(time.monotonic())
            self.on_request_done()

    def _on_done(self) -> None:
        for _ in range(self.dispatcher.reap()):
            self.on_request_done()
        if self.dispatcher.has_room() and not self.stopping:
            self._listen(True)

    def _on_signals(self) -> None:
        for sig in self.signals.read():
            if sig == signal.SIGTERM:
                self.stop("TERM")
            else:
                self.on_signal(sig)

    def _on_master_gone(self) -> None:
        self.selector.unregister(self.alive_fd)
        self.stop("the master is gone")
