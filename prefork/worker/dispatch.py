"""How a worker runs the connections its loop accepts: inline, or on a thread pool.

A dispatcher is given ``(server, conn, address)`` by the serve loop and
calls ``server.serve_connection(conn, address)``.  The loop asks
:meth:`has_room` before accepting, so a busy thread worker leaves new
connections in the kernel's backlog, where another worker can take them,
instead of queueing them without bound.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from typing import Any, Optional

from ..scoreboard import WorkerSlot


class SyncDispatcher:
    """One connection at a time, in the loop's own thread (socketserver's TCPServer)."""

    # Back to the selector after each connection: heartbeat and signals are
    # checked between two handlers, never only after a whole batch.
    accept_batch = 1

    def __init__(self, slot: WorkerSlot) -> None:
        self.slot = slot
        self.busy = 0

    def fileno(self) -> Optional[int]:
        return None

    def has_room(self) -> bool:
        return True

    def idle(self) -> bool:
        return True

    def submit(self, server: Any, conn: Any, address: Any) -> None:
        self.slot.request_started(time.monotonic())
        try:
            server.serve_connection(conn, address)
        finally:
            self.slot.request_finished()

    def reap(self) -> int:
        return 0


class ThreadDispatcher:
    """``threads`` threads; each finished connection is one byte on a pipe to the loop.

    The counters (busy, the scoreboard slot) are only touched by the loop's
    thread, in :meth:`submit` and :meth:`reap`, so they need no lock.
    """

    def __init__(self, slot: WorkerSlot, threads: int) -> None:
        self.slot = slot
        self.threads = threads
        self.accept_batch = threads
        self.busy = 0
        self._jobs: "queue.SimpleQueue[tuple]" = queue.SimpleQueue()
        self._done_r, self._done_w = os.pipe()
        os.set_blocking(self._done_r, False)
        for n in range(threads):
            threading.Thread(target=self._work, name=f"prefork-handler-{n}", daemon=True).start()

    def fileno(self) -> Optional[int]:
        return self._done_r

    def has_room(self) -> bool:
        return self.busy < self.threads

    def idle(self) -> bool:
        return self.busy == 0

    def submit(self, server: Any, conn: Any, address: Any) -> None:
        self.busy += 1
        self.slot.request_started(time.monotonic())
        self._jobs.put((server, conn, address))

    def reap(self) -> int:
        """Account for finished connections; returns how many finished."""
        finished = 0
        while True:
            try:
                data = os.read(self._done_r, 4096)
            except BlockingIOError:
                break
            finished += len(data)
            if len(data) < 4096:
                break
        for _ in range(finished):
            self.busy -= 1
            self.slot.request_finished()
        return finished

    def _work(self) -> None:
        while True:
            server, conn, address = self._jobs.get()
            try:
                server.serve_connection(conn, address)
            finally:
                os.write(self._done_w, b".")
