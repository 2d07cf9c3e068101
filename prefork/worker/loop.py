"""A worker's serve loop: one thread, one selector, socketserver's serve_forever generalized.

The selector watches the listeners, the worker's signal pipe, the master's
alive pipe (EOF = the master is gone), the dispatcher's done pipe and any
connections a protocol parks here (HTTP keep-alive).  Each registered key's
``data`` is the callback to run when it is ready.

What it drives, and what they may ask of it, are the contracts named in
:mod:`prefork.servers.contracts`: a server per listener (a
:class:`~prefork.servers.contracts.StreamServer`, whose readable socket
means a connection to accept, or a
:class:`~prefork.servers.contracts.PacketServer`, whose readable socket
means a datagram to read), and the connections a protocol parks here
(:class:`~prefork.servers.contracts.Parked`: ``tick(now)`` about twice a
second for their deadlines, ``stop()``, ``hurry(deadline)``), dropped with
:meth:`ServeLoop.forget`.  This loop is the
:class:`~prefork.servers.contracts.Loop` they are given.

Graceful stop (TERM, or the master gone): accept (or read, for datagrams)
what the kernel had queued when the stop began, close this worker's copy of
the listeners, let jobs and connections finish, exit.  The master enforces
graceful_timeout; the loop enforces it too, for the case where there is no
master left to do it.
"""

from __future__ import annotations

import logging
import os
import selectors
import time
from typing import Any, Callable, Optional, Sequence, Union

from ..scoreboard import READY, WorkerSlot
from ..servers.contracts import PacketServer, Parked, StreamServer
from ..sockets import accepter
from .accepting import (DRAIN_UNKNOWN, EPOLLEXCLUSIVE, FD_PAUSE, accept_batch,  # noqa: F401
                        drain_size, wake_one)
from .duties import IDLE_WAIT, LoopDuties
from .inflight import Describe, InFlight, ThreadedInFlight, Tracker
from .jobs import InlineJobs

logger = logging.getLogger("prefork")

TICK = 1.0
SWEEP = 0.5          # seconds between two deadline sweeps over parked connections


class ServeLoop(LoopDuties):
    """Run until stopped; see the module docstring for what it drives."""

    def __init__(self, servers: Sequence[Union[StreamServer, PacketServer]], dispatcher: Any,
                 slot: WorkerSlot, signals: Any, alive_fd: int, graceful_timeout: float,
                 on_signal: Callable[[int], None], on_request_done: Callable[[], None],
                 max_connections: int = 0, inflight: Optional[Tracker] = None,
                 needs_thread: bool = False) -> None:
        self._init_duties(slot, signals, alive_fd, graceful_timeout, on_signal,
                          on_request_done, max_connections)
        self.needs_thread = needs_thread
        self.servers = servers
        self.dispatcher = dispatcher
        self.multithread = dispatcher.multithread
        self.inflight = inflight    # show_requests or request_timeout
        # What a connection calls for each job: a sync worker's is compiled (.jobs).
        self.run_job: Callable[..., None] = self._run_threaded if self.multithread else \
            InlineJobs(slot, inflight if isinstance(inflight, InFlight) else None,
                       on_request_done).run_job
        self.selector = selectors.DefaultSelector()
        self.deadline: Optional[float] = None
        self._next_sweep = 0.0
        self._accepters = {id(s): accepter(s.socket) for s in servers
                           if not getattr(s, "datagram", False)}

    # -- setup -----------------------------------------------------------

    def open(self) -> None:
        self.selector.register(self.signals.fileno(), selectors.EVENT_READ, self._on_signals)
        self.selector.register(self.alive_fd, selectors.EVENT_READ, self._on_master_gone)
        done_fd = self.dispatcher.fileno()
        if done_fd is not None:
            self.selector.register(done_fd, selectors.EVENT_READ, self.dispatcher.reap)
        self._listen(True)
        self.slot.set_state(READY)

    def _has_room(self) -> bool:
        """May this worker accept another connection now?

        HTTP connections wait in the selector and their requests queue fairly
        for a thread: only their count (``max_connections``) limits accepting.
        A handler class's connection takes a thread for its whole life
        (``needs_thread``): a free thread is needed too, and what is parked is
        only connections still in their TLS handshake or PROXY header, which
        ``max_connections`` bounds as well.  Gating HTTP on free threads would
        starve new connections behind busy keep-alive ones.
        """
        if self.max_connections and len(self.connections) >= self.max_connections:
            return False
        return not self.needs_thread or self.dispatcher.has_room()

    def _listen(self, on: bool) -> None:
        if on == self._listening or (on and self.stopping):
            return
        for server in self.servers:
            if on:
                self.selector.register(server.socket, selectors.EVENT_READ,
                                       lambda s=server: self._accept(s))
                wake_one(self.selector, server.socket)
            else:
                self.selector.unregister(server.socket)
        self._listening = on

    # -- what protocols and servers call -----------------------------------

    def _run_threaded(self, job: Callable[[], None],
                      on_done: Optional[Callable[[], None]] = None, counts: bool = True,
                      what: Optional[Describe] = None) -> None:
        """``run_job`` of a thread worker: ``job`` on the pool; ``on_done`` follows in
        this thread.  ``counts``: the job is one request (scoreboard, max_requests).
        ``what``: says which request the job runs app code for (show_requests)."""
        if counts:
            self.slot.request_started(time.monotonic())
        inflight = self.inflight if what is not None else None
        if isinstance(inflight, ThreadedInFlight):   # timed in the thread that runs it
            job = inflight.timed(job, what)
        self.dispatcher.run(job, lambda: self._job_done(on_done, counts))

    def _job_done(self, on_done: Optional[Callable[[], None]], counts: bool) -> None:
        if counts:
            self.slot.request_finished(time.monotonic())
            self.on_request_done()
        if on_done is not None:
            on_done()
        if not self._listening and self._has_room():
            self._listen(True)

    def forget(self, connection: Parked) -> None:
        self.connections.discard(connection)

    # -- the loop --------------------------------------------------------

    def run(self) -> None:
        while True:
            now = time.monotonic()
            self.slot.heartbeat(now)
            # Deadlines first: a stopping worker whose last connections they
            # close exits now, not after one more wait in select.
            if now >= self._next_sweep:
                self._next_sweep = now + SWEEP
                for connection in list(self.connections):
                    connection.tick(now)
                if self.stopping:
                    for server in self.servers:
                        server.close_idle(IDLE_WAIT)
            if self.stopping:
                if self.dispatcher.idle() and not self.connections:
                    return
                if now >= self.deadline:
                    logger.warning("graceful_timeout passed with %d job(s) and %d connection(s) "
                                   "open; exiting", self.dispatcher.busy, len(self.connections))
                    return
            if not self._listening and self._has_room() and now >= self._resume_at:
                self._listen(True)
            timeout = TICK
            if self.connections or self.stopping:
                timeout = min(TICK, self._next_sweep - now)
            for key, _ in self.selector.select(max(timeout, 0.0)):
                key.data()
            if os.getppid() != self.master_pid and not self.stopping:
                self._on_master_gone()

    def _close_server(self, server: Any) -> None:
        server.server_close()
        server.close_idle(IDLE_WAIT)

    # -- callbacks -------------------------------------------------------

    def _accept(self, server: Any, limit: Optional[int] = None) -> None:
        """Accept a batch while there is room; with ``limit``, up to that many regardless."""
        if limit is None and not self._listening:
            # An event from the same select() batch, after a callback before it
            # stopped listening (or began a stop and closed the listener).
            return
        if limit is not None:
            batch = limit
        else:
            batch = getattr(server, "accept_batch", 0) or self.dispatcher.accept_batch
        if getattr(server, "datagram", False):
            self._receive(server, batch, drain=limit is not None)
            return
        self._accept_batch(server, batch, limit)

    def _receive(self, server: Any, batch: int, drain: bool) -> None:
        """Read up to ``batch`` datagrams, each run as one job; ``drain``: regardless of room.

        A datagram holds a thread for as long as its handler runs, like a
        connection, so a thread worker reads no more than it has free
        threads: the rest wait in the socket's queue for a worker with room.
        """
        while batch > 0 and (drain or self._has_room()):
            try:
                request, address = server.get_request()
            except BlockingIOError:
                break   # another worker won the race, or the queue is empty
            except OSError as exc:
                # Out of kernel memory, or an error queued on the socket: keep
                # serving, but do not spin on a socket that keeps failing.
                logger.error("recvfrom failed: %s; pausing reads for a moment", exc.strerror)
                self._listen(False)
                self._resume_at = time.monotonic() + FD_PAUSE
                break
            batch -= 1
            server.received(request, address, self)
        if not self._has_room():
            self._listen(False)

    def _unwatch_alive(self) -> None:
        self.selector.unregister(self.alive_fd)

    def _hurried(self, soon: float) -> None:
        # The sweep that closes idle connections runs just then.
        self._next_sweep = soon
