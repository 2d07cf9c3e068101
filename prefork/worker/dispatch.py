"""Where a worker runs its jobs: inline in the loop's thread, or on a thread pool.

A job is a callable that serves a connection (a socketserver handler) or a
request (a WSGI app call).  The sync dispatcher only describes the worker:
the loop calls its jobs inline.  ``ThreadDispatcher.run(job, on_done)`` runs
one on the pool; ``on_done`` is called afterwards *in the loop's thread*, so
everything that touches the selector or the scoreboard stays single-threaded.  The loop asks
:meth:`has_room` before accepting, so a busy thread worker leaves new
connections in the kernel's backlog, where another worker can take them,
instead of queueing them without bound.
"""

from __future__ import annotations

import collections
import logging
import os
import queue
import threading
from typing import Callable, Optional

logger = logging.getLogger("prefork")

Job = Callable[[], None]
Done = Optional[Callable[[], None]]


class SyncDispatcher:
    """One job at a time, in the loop's own thread (socketserver's TCPServer)."""

    # Back to the selector after each connection: heartbeat and signals are
    # checked between two handlers, never only after a whole batch.
    accept_batch = 1
    multithread = False

    def __init__(self) -> None:
        self.busy = 0

    def fileno(self) -> Optional[int]:
        return None

    def has_room(self) -> bool:
        return True

    def idle(self) -> bool:
        return True


class ThreadDispatcher:
    """``threads`` threads; each finished job is one byte on a pipe to the loop.

    ``busy`` is only touched by the loop's thread (in :meth:`run` and
    :meth:`reap`), so it needs no lock; the finished callbacks cross threads
    through a deque, whose append and popleft are atomic.
    """

    multithread = True

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self.accept_batch = threads
        self.busy = 0
        self._jobs: "queue.SimpleQueue[tuple]" = queue.SimpleQueue()
        self._finished: "collections.deque[Done]" = collections.deque()
        self._done_r, self._done_w = os.pipe()
        os.set_blocking(self._done_r, False)
        for n in range(threads):
            threading.Thread(target=self._work, name=f"prefork-thread-{n}", daemon=True).start()

    def fileno(self) -> Optional[int]:
        return self._done_r

    def has_room(self) -> bool:
        return self.busy < self.threads

    def idle(self) -> bool:
        return self.busy == 0

    def run(self, job: Job, on_done: Done = None) -> None:
        self.busy += 1
        self._jobs.put((job, on_done))

    def reap(self) -> None:
        """Run the callbacks of finished jobs (in the loop's thread)."""
        while True:
            try:
                data = os.read(self._done_r, 4096)
            except BlockingIOError:
                return
            for _ in range(len(data)):
                self.busy -= 1
                on_done = self._finished.popleft()
                if on_done is not None:
                    on_done()
            if len(data) < 4096:
                return

    def _work(self) -> None:
        while True:
            job, on_done = self._jobs.get()
            try:
                job()
            except BaseException:   # a job handles its own errors; this is a last resort
                logger.exception("unhandled error in a worker thread")
            finally:
                self._finished.append(on_done)
                os.write(self._done_w, b".")
