"""Which request a worker has been running longest, kept in its scoreboard slot.

Built when show_requests (the default) or request_timeout is on: ``prefork
top``, ``status`` and /status show the slot, and with request_timeout the
master aborts a sync or thread worker whose oldest request is past the
limit.  The text (request line and client) is in shared memory before it is
needed because a worker stuck in C code cannot be asked for it.

What is timed is the application's code running for one request: a job
from the moment a thread starts it.  Time a request waits for a free thread,
or for a slow client to read its response, does not count; neither does the
time a handler class waits in ``recv`` for its client (see :meth:`pause`),
so an idle keep-alive connection is not a stuck request.

A sync worker runs one request at a time (:class:`InFlight`): each start
writes its time and text, each stop clears the time, about a microsecond in
all.  On a thread worker several run at once (:class:`ThreadedInFlight`); the
slot shows the one that started first.  It only changes when that one stops,
so most starts and stops there are a lock and a set operation.  The asyncio
worker (:class:`AsyncInFlight`) runs many requests in one thread; there the
oldest is the first still open in start order, and its text is formatted only
once it is the one shown.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Callable, Optional, Protocol, Set, Union

from ..scoreboard import WorkerSlot

Describe = Callable[[], str]


Clock = Callable[[], float]


def tracker(slot: WorkerSlot, multithread: bool) -> "Tracker":
    """The tracker for a worker whose jobs run on several threads or on one."""
    return ThreadedInFlight(slot) if multithread else InFlight(slot)


class _Request:
    __slots__ = ("describe", "since", "_text")

    def __init__(self, describe: Describe) -> None:
        self.describe = describe
        self.since = 0.0
        self._text = b""

    def text(self) -> bytes:
        if not self._text:   # formatted at most once, and only if it is ever shown
            self._text = self.describe().encode("utf-8", "backslashreplace")
        return self._text


class InFlight:
    """One request at a time, in the thread of the worker's loop; ``slot`` shows it."""

    def __init__(self, slot: WorkerSlot, clock: Clock = time.monotonic) -> None:
        self._slot = slot
        self._clock = clock
        self._describe: Optional[Describe] = None    # of the job running now
        self._text = b""

    def begin(self, describe: Describe) -> None:
        """A job for one request starts; ``describe()`` says which."""
        self._describe = describe
        self._text = describe().encode("utf-8", "backslashreplace")
        self._slot.show_running(self._clock(), self._text)

    def end(self) -> None:
        self._describe = None
        self._slot.show_idle()

    def pause(self) -> None:
        """The request waits for its client (a handler in recv): not running meanwhile."""
        if self._describe is not None:
            self._slot.show_idle()

    def resume(self) -> None:
        """The wait is over: the request runs again, timed from now."""
        if self._describe is not None:
            self._slot.show_running(self._clock(), self._text)


class ThreadedInFlight:
    """The requests running on a thread worker's pool; ``slot`` shows the oldest."""

    def __init__(self, slot: WorkerSlot, clock: Clock = time.monotonic) -> None:
        self._slot = slot
        self._clock = clock
        self._lock = threading.Lock()     # jobs start and stop on several threads
        self._running: Set[_Request] = set()
        self._shown: Optional[_Request] = None
        self._local = threading.local()   # the request the current thread runs

    def timed(self, job: Callable[[], None], describe: Describe) -> Callable[[], None]:
        """``job`` wrapped in :meth:`begin` and :meth:`end`, for a pool thread to run."""
        def run() -> None:
            self.begin(describe)
            try:
                job()
            finally:
                self.end()
        return run

    def begin(self, describe: Describe) -> None:
        """A job for one request starts in this thread; ``describe()`` says which."""
        request = _Request(describe)
        self._local.request = request
        self._start(request)

    def end(self) -> None:
        request = self._local.request
        self._local.request = None
        self._stop(request)

    def pause(self) -> None:
        """The current thread's request waits for its client: not running meanwhile."""
        request = getattr(self._local, "request", None)
        if request is not None and request.since:
            self._stop(request)

    def resume(self) -> None:
        """The wait is over: the request runs again, timed from now."""
        request = getattr(self._local, "request", None)
        if request is not None and not request.since:
            self._start(request)

    def _start(self, request: _Request) -> None:
        with self._lock:
            request.since = self._clock()
            self._running.add(request)
            # Started last, so the oldest only if nothing else runs.
            if self._shown is None:
                self._show(request)

    def _stop(self, request: _Request) -> None:
        with self._lock:
            request.since = 0.0
            self._running.discard(request)
            if self._shown is request:
                oldest = min(self._running, key=_since) if self._running else None
                self._show(oldest)

    def _show(self, request: Optional[_Request]) -> None:
        self._shown = request
        if request is None:
            self._slot.show_idle()
        else:
            self._slot.show_running(request.since, request.text())


def _since(request: _Request) -> float:
    return request.since


class Described(Protocol):
    def shown_as(self) -> str:
        """The request line and client, as top and status show them."""


class AsyncInFlight:
    """The requests an event loop runs at once, all in its thread; ``slot`` shows the oldest.

    A start that is not the only one running, and a stop that is not the
    shown one, touch only a dict: no shared-memory write, no formatting.
    """

    def __init__(self, slot: WorkerSlot) -> None:
        self._slot = slot
        self._running: "OrderedDict[int, tuple]" = OrderedDict()   # id -> (since, request)

    def begin(self, request: Described, since: float) -> None:
        """``request`` started at ``since``: its app code runs from now."""
        self._running[id(request)] = (since, request)
        if len(self._running) == 1:
            self._show(since, request)

    def end(self, request: Described) -> None:
        running = self._running
        key = id(request)
        if key not in running:
            return
        shown = next(iter(running)) == key      # the first still open is the oldest
        del running[key]
        if not shown:
            return
        if running:
            since, oldest = next(iter(running.values()))
            self._show(since, oldest)
        else:
            self._slot.show_idle()

    def _show(self, since: float, request: Described) -> None:
        self._slot.show_running(since, request.shown_as().encode("utf-8", "backslashreplace"))


Tracker = Union[InFlight, ThreadedInFlight]   # of the selector loop's workers
