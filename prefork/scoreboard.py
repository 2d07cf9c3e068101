"""The scoreboard: one anonymous shared mmap, one fixed-size slot per worker.

The master creates it before the first fork, so every worker shares the same
pages.  A worker writes only its own slot (a heartbeat is one ``pack_into``,
no syscall); the master and ``prefork status`` read all of them.  Times are
``time.monotonic()``, which is the same clock in every process of the host.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from typing import Iterator, Tuple

# pid, generation, state, booted, heartbeat, requests, connections, request_start,
# busy_total: the four a request updates are adjacent, so each update is one
# pack_into.  ``connections`` counts requests in flight (for a handler class,
# a connection is its one request).
_SLOT = struct.Struct("=qqqddqqdd")
SLOT_SIZE = 256
# Then, while show_requests or request_timeout is on, the request the worker
# has been running longest: since when (0.0 = none), and what it is, as UTF-8
# text padded with NULs (see prefork.worker.inflight).
DOING_SIZE = 160
_RUNNING_AT = _SLOT.size
_SHOWN = struct.Struct(f"=d{DOING_SIZE}s")
# Then 1 if the worker enforces request_timeout itself (the asyncio worker
# cancels the request's task), so the master must not abort it for that.
_OWN_CLOCK_AT = _RUNNING_AT + _SHOWN.size
assert _OWN_CLOCK_AT + 8 <= SLOT_SIZE

_STATE_AT = struct.calcsize("=qq")
_HEARTBEAT_AT = struct.calcsize("=qqqd")
_REQUESTS_AT = struct.calcsize("=qqqdd")
_DOUBLE = struct.Struct("=d")
_LONG = struct.Struct("=q")
_COUNTS = struct.Struct("=qqdd")    # requests, connections, request_start, busy_total
_BEAT_AND_COUNTS = struct.Struct("=dqqdd")   # the heartbeat precedes the counts
assert _HEARTBEAT_AT + _DOUBLE.size == _REQUESTS_AT

# The master's scoreboard.  One generation may have at most half of it, so
# that a reload can run two full generations side by side; config
# validation, TTIN, ``scale`` and the arbiter all take the cap from here.
SLOTS = 1024


def max_pool(slots: int = SLOTS) -> int:
    """The most workers one generation may have on a scoreboard of ``slots``."""
    return slots // 2


MAX_WORKERS = max_pool()


def clamp_pool(workers: int, slots: int = SLOTS) -> int:
    """``workers`` brought within 1 .. :func:`max_pool` (``slots``)."""
    return max(1, min(workers, max_pool(slots)))


FREE, BOOTING, READY, DRAINING = 0, 1, 2, 3
STATE_NAMES = {FREE: "free", BOOTING: "booting", READY: "ready", DRAINING: "draining"}


@dataclass(frozen=True)
class SlotView:
    """A copy of one slot, as read at one moment."""

    slot: int
    pid: int
    generation: int
    state: int
    requests: int
    connections: int
    booted: float
    heartbeat: float
    request_start: float
    busy_seconds: float = 0.0    # total time with at least one request in flight
    running_since: float = 0.0   # the longest-running request (show_requests on)
    doing: str = ""              # what that request is


class Scoreboard:
    """``capacity`` slots in one shared anonymous mapping."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._mm = mmap.mmap(-1, capacity * SLOT_SIZE, flags=mmap.MAP_SHARED)

    def claim(self, slot: int, pid: int, generation: int, now: float) -> None:
        """Reset ``slot`` for a new worker (the master does this right after fork)."""
        _SLOT.pack_into(self._mm, slot * SLOT_SIZE, pid, generation, BOOTING, now, now,
                        0, 0, 0.0, 0.0)
        _SHOWN.pack_into(self._mm, slot * SLOT_SIZE + _RUNNING_AT, 0.0, b"")
        _LONG.pack_into(self._mm, slot * SLOT_SIZE + _OWN_CLOCK_AT, 0)

    def set_pid(self, slot: int, pid: int) -> None:
        _LONG.pack_into(self._mm, slot * SLOT_SIZE, pid)

    def release(self, slot: int) -> None:
        _SLOT.pack_into(self._mm, slot * SLOT_SIZE, 0, 0, FREE, 0.0, 0.0, 0, 0, 0.0, 0.0)
        _SHOWN.pack_into(self._mm, slot * SLOT_SIZE + _RUNNING_AT, 0.0, b"")
        _LONG.pack_into(self._mm, slot * SLOT_SIZE + _OWN_CLOCK_AT, 0)

    def times_own_requests(self, slot: int) -> bool:
        """Does ``slot``'s worker enforce request_timeout itself (no abort for it)?"""
        return bool(_LONG.unpack_from(self._mm, slot * SLOT_SIZE + _OWN_CLOCK_AT)[0])

    def read(self, slot: int) -> SlotView:
        pid, generation, state, booted, heartbeat, requests, connections, start, busy = \
            _SLOT.unpack_from(self._mm, slot * SLOT_SIZE)
        since, doing = self.running(slot)
        return SlotView(slot, pid, generation, state, requests, connections, booted,
                        heartbeat, start, busy, since, doing)

    def running(self, slot: int) -> Tuple[float, str]:
        """The request ``slot``'s worker has been running longest: (since, what), or (0.0, "").

        Not atomic against the worker's write: a request ending right now
        may pair its start with the next one's text.  The master only acts on
        a start older than request_timeout, which nothing is rewriting.
        """
        since, raw = _SHOWN.unpack_from(self._mm, slot * SLOT_SIZE + _RUNNING_AT)
        if not since:
            return 0.0, ""
        return since, raw.rstrip(b"\0").decode("utf-8", "replace")

    def __iter__(self) -> Iterator[SlotView]:
        for slot in range(self.capacity):
            view = self.read(slot)
            if view.pid:
                yield view

    def served(self, slot: int) -> int:
        """Requests the slot's worker finished, plus those in flight."""
        requests, connections = _COUNTS.unpack_from(self._mm, slot * SLOT_SIZE + _REQUESTS_AT)[:2]
        return requests + connections

    def heartbeat_of(self, slot: int) -> float:
        return _DOUBLE.unpack_from(self._mm, slot * SLOT_SIZE + _HEARTBEAT_AT)[0]

    def close(self) -> None:
        self._mm.close()

    def slot(self, index: int) -> "WorkerSlot":
        return WorkerSlot(self._mm, index * SLOT_SIZE)


class WorkerSlot:
    """A worker's handle on its own slot; only that worker writes through it."""

    def __init__(self, mm: mmap.mmap, offset: int) -> None:
        self._mm = mm
        self._offset = offset
        self.requests = 0
        self.connections = 0
        self.busy_total = 0.0
        # request_start as last written: busy since, or idle since.  Only this
        # worker writes it, so it is kept here rather than read back each time.
        self._since: float = _COUNTS.unpack_from(mm, offset + _REQUESTS_AT)[2]

    def heartbeat(self, now: float) -> None:
        _DOUBLE.pack_into(self._mm, self._offset + _HEARTBEAT_AT, now)

    def set_state(self, state: int) -> None:
        _LONG.pack_into(self._mm, self._offset + _STATE_AT, state)

    def times_own_requests(self) -> None:
        """This worker enforces request_timeout itself: the master only shows its requests."""
        _LONG.pack_into(self._mm, self._offset + _OWN_CLOCK_AT, 1)

    def show_running(self, since: float, doing: bytes) -> None:
        """Publish the request running longest; ``doing`` is cut to DOING_SIZE bytes."""
        if len(doing) > DOING_SIZE:
            doing = doing[:DOING_SIZE - 3] + b"..."
        _SHOWN.pack_into(self._mm, self._offset + _RUNNING_AT, since, doing)

    def show_idle(self) -> None:
        """No request running: only the time is cleared, the stale text is never read."""
        _DOUBLE.pack_into(self._mm, self._offset + _RUNNING_AT, 0.0)

    def request_started(self, now: float) -> None:
        """``request_start`` is when the worker last went from idle to busy."""
        if not self.connections:
            self._since = now
        self.connections += 1
        _COUNTS.pack_into(self._mm, self._offset + _REQUESTS_AT, self.requests,
                          self.connections, self._since, self.busy_total)

    def request_finished(self, now: float) -> None:
        """``request_start`` then means "idle since" until the next request starts.

        Also a heartbeat (this runs in the loop's thread), written with the
        counts in one ``pack_into``.
        """
        self.connections -= 1
        self.requests += 1
        # The start time stays while other requests are in flight (thread worker).
        if not self.connections:
            self.busy_total += now - self._since
            self._since = now
        _BEAT_AND_COUNTS.pack_into(self._mm, self._offset + _HEARTBEAT_AT, now, self.requests,
                                   self.connections, self._since, self.busy_total)
