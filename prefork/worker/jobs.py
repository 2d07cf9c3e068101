"""The sync worker's ``run_job``: a request's job in the loop's own thread, and its bookkeeping.

Every request on a sync worker passes here: the scoreboard's counts before
and after (:class:`~prefork.scoreboard.WorkerSlot`), the request shown while
it runs (:class:`~prefork.worker.inflight.InFlight`, with show_requests or
request_timeout), the max_requests check, then the connection's own
continuation.  It is compiled with the HTTP hot path (README, "The compiled
hot path"), which is why it is a class of its own rather than a method of
:class:`~prefork.worker.loop.ServeLoop`: the connection calls its bound
``run_job`` directly, compiled code to compiled code.  The thread worker
keeps :meth:`ServeLoop.run_job`, which hands jobs to its pool.
"""

from __future__ import annotations

from time import monotonic
from typing import Callable, Optional

from ..scoreboard import WorkerSlot
from .inflight import Describe, InFlight


class InlineJobs:
    """``run_job`` for a worker that runs one job at a time, in its loop's thread."""

    def __init__(self, slot: WorkerSlot, inflight: Optional[InFlight],
                 on_request_done: Callable[[], None]) -> None:
        self.slot = slot
        self.inflight = inflight
        self.on_request_done = on_request_done

    def run_job(self, job: Callable[[], None], on_done: Optional[Callable[[], None]] = None,
                counts: bool = True, what: Optional[Describe] = None) -> None:
        """Run ``job`` now; then ``on_done``.  ``counts``: the job is one request
        (scoreboard, max_requests); ``what``: which request it runs app code for."""
        slot = self.slot
        if counts:
            slot.request_started(monotonic())
        inflight = self.inflight if what is not None else None
        if inflight is not None and what is not None:
            inflight.begin(what)
        try:
            job()
        finally:
            if inflight is not None:
                inflight.end()
            if counts:
                slot.request_finished(monotonic())     # a heartbeat too
                self.on_request_done()
            else:
                slot.heartbeat(monotonic())
            if on_done is not None:
                on_done()
