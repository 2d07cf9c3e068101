"""The asyncio worker's loop: the selector loop's duties (:mod:`.loop`) on an event loop.

Its servers (ASGI, :mod:`prefork.servers.asgi`) make each connection an
``asyncio.Protocol`` and each request a task; what they may ask of this loop
is :class:`prefork.servers.contracts.AsyncLoop`.  The rest is the same
supervision as the selector worker, done with loop callbacks:

- listeners are readers on the event loop, accepted in bounded batches
  with the same error handling (:mod:`.accepting`); at ``max_connections``
  open connections the readers are removed, so new connections wait in the
  kernel's backlog for a worker with room;
- a ``call_later`` chain every SWEEP seconds writes the heartbeat and runs
  the connections' deadlines: a loop blocked by synchronous code stops
  heartbeating, and the master's ``timeout`` dumps its traceback and kills it;
- the worker's SignalPipe fd (TERM: graceful stop; anything else goes to
  ``on_signal``) and the master's alive pipe (EOF: the master is gone) are
  readers too;
- a graceful stop accepts what the kernel had queued, closes the listeners,
  tells connections to finish their request, and ends when no connection
  and no request is left, or at ``graceful_timeout``; then the app's
  lifespan shutdown runs (``run(shutdown)``).

QUIT and INT cannot unwind the worker by raising (asyncio would catch the
exception in whatever callback or task it landed in), so process.py makes
them end the process at once in this kind of worker.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import time
from typing import Any, Awaitable, Callable, List, Optional, Sequence

from ..scoreboard import READY, WorkerSlot
from ..servers.contracts import Parked, StreamServer
from ..sockets import accepter
from .accepting import wake_one
from .duties import LoopDuties
from .inflight import AsyncInFlight, Described

logger = logging.getLogger("prefork")

SWEEP = 0.5        # seconds between heartbeats and deadline sweeps (the master wants 1 s at most)
ACCEPT_BATCH = 4   # connections per wake-up, unless the server says (see WSGIServer's)


def new_event_loop(kind: str) -> asyncio.AbstractEventLoop:
    """``kind``: "uvloop", "asyncio", or "auto" (uvloop when it imports)."""
    if kind != "asyncio":
        try:
            uvloop = importlib.import_module("uvloop")
        except ImportError:
            if kind == "uvloop":
                raise
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def loop_name(loop: asyncio.AbstractEventLoop) -> str:
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"


class AsyncioLoop(LoopDuties):
    """One event loop serving ``servers``; see the module docstring."""

    def __init__(self, servers: Sequence[StreamServer], slot: WorkerSlot, signals: Any,
                 alive_fd: int, graceful_timeout: float, on_signal: Callable[[int], None],
                 on_request_done: Callable[[], None], max_connections: int,
                 loop_kind: str = "auto", show_requests: bool = False) -> None:
        self._init_duties(slot, signals, alive_fd, graceful_timeout, on_signal,
                          on_request_done, max_connections)
        self.servers = servers
        self.loop = new_event_loop(loop_kind)
        asyncio.set_event_loop(self.loop)   # for apps that ask asyncio.get_event_loop()
        self.running = 0                    # requests whose app has not returned yet
        # request_timeout is this worker's own (it cancels the task): the slot only shows.
        self.inflight = AsyncInFlight(slot) if show_requests else None
        slot.times_own_requests()
        self.deadline = 0.0
        self._opened = False                # ready: listening is allowed
        self._finished: Optional[asyncio.Future] = None
        self._beat: Optional[asyncio.TimerHandle] = None
        self._accepters = {id(s): accepter(s.socket) for s in servers}

    @property
    def kind(self) -> str:
        return loop_name(self.loop)

    # -- what servers and connections call (contracts.AsyncLoop) --------------

    def forget(self, connection: Parked) -> None:
        self.connections.discard(connection)
        if self.stopping:
            self._maybe_done()
        elif not self._listening and self._has_room() and time.monotonic() >= self._resume_at:
            self._listen(True)

    def request_started(self, request: Optional[Described] = None) -> None:
        self.running += 1
        now = time.monotonic()
        self.slot.request_started(now)
        if self.inflight is not None and request is not None:
            self.inflight.begin(request, now)

    def request_finished(self, request: Optional[Described] = None) -> None:
        self.running -= 1
        if self.inflight is not None and request is not None:
            self.inflight.end(request)
        self.slot.request_finished(time.monotonic())
        self.on_request_done()
        if self.stopping:
            self._maybe_done()

    # -- life ----------------------------------------------------------------

    def boot(self, startup: Optional[Callable[[], Awaitable[None]]]) -> None:
        """Start heartbeating and run ``startup()`` (the app's lifespan) to its end;
        whatever it raises propagates (a boot failure)."""
        self._schedule_beat()
        if startup is not None:
            self.loop.call_soon(self.signals.rearm)    # see run()
            self.loop.run_until_complete(startup())

    def open(self) -> None:
        """Listen, and take signals and the master's pipe; the worker is ready."""
        self.loop.add_reader(self.signals.fileno(), self._on_signals)
        self.loop.add_reader(self.alive_fd, self._on_master_gone)
        self._opened = True
        self._listen(True)
        self.slot.set_state(READY)

    def run(self, shutdown: Optional[Callable[[float], Awaitable[None]]] = None) -> None:
        """Serve until a graceful stop has ended, then ``shutdown(seconds left)``."""
        loop = self.loop
        self._finished = loop.create_future()
        # uvloop points the signal wakeup fd at a pipe of its own while it runs,
        # which would leave the worker's SignalPipe deaf: point it back.
        loop.call_soon(self.signals.rearm)
        loop.run_until_complete(self._finished)
        if shutdown is not None:
            left = max(self.deadline - time.monotonic(), 1.0)
            try:
                loop.run_until_complete(shutdown(left))
            except Exception:
                logger.exception("lifespan shutdown failed")
        self._close()

    def _close(self) -> None:
        loop = self.loop
        tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            loop.run_until_complete(asyncio.wait(tasks, timeout=1.0))
        if self._beat is not None:
            self._beat.cancel()
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()

    # -- heartbeat and deadlines -----------------------------------------------

    def _schedule_beat(self) -> None:
        self._beat = self.loop.call_later(SWEEP, self._on_beat)
        self.slot.heartbeat(time.monotonic())

    def _on_beat(self) -> None:
        now = time.monotonic()
        self._schedule_beat()
        for connection in list(self.connections):
            connection.tick(now)
        if not self.stopping and os.getppid() != self.master_pid:
            self._on_master_gone()
        if self.stopping:
            self._maybe_done(now)
        elif not self._listening and self._has_room() and now >= self._resume_at:
            self._listen(True)

    def _maybe_done(self, now: float = 0.0) -> None:
        finished = self._finished
        if finished is None or finished.done():
            return
        if not self.connections and not self.running:
            finished.set_result(None)
        elif (now or time.monotonic()) >= self.deadline:
            logger.warning("graceful_timeout passed with %d request(s) and %d connection(s) "
                           "open; exiting", self.running, len(self.connections))
            finished.set_result(None)

    # -- accepting ---------------------------------------------------------------

    def _has_room(self) -> bool:
        return len(self.connections) < self.max_connections

    def _listen(self, on: bool) -> None:
        if on == self._listening or (on and (self.stopping or not self._opened)):
            return
        selector = getattr(self.loop, "_selector", None)   # asyncio's own loop has one
        for server in self.servers:
            fd = server.socket.fileno()
            if on:
                self.loop.add_reader(fd, self._accept, server)
                if selector is not None:
                    wake_one(selector, server.socket)
            else:
                self.loop.remove_reader(fd)
        self._listening = on

    def _accept(self, server: Any, limit: Optional[int] = None) -> None:
        """Accept a batch while there is room; with ``limit``, up to that many regardless."""
        if limit is None and not self._listening:
            return
        batch = (getattr(server, "accept_batch", 0) or ACCEPT_BATCH) if limit is None else limit
        self._accept_batch(server, batch, limit)

    # -- stopping ------------------------------------------------------------------

    def _stopping_begun(self) -> None:
        self._maybe_done()

    def _unwatch_alive(self) -> None:
        self.loop.remove_reader(self.alive_fd)


__all__: List[str] = ["AsyncioLoop", "new_event_loop", "loop_name"]
