"""The adaptive pool (``--max-workers``): when to grow or shrink, with no I/O.

The pool runs between a *floor* (``workers``, moved by TTIN/TTOU and
``scale``) and a *ceiling* (``max_workers``).  Each turn the master reports
which workers are busy and how many connections wait in the listen queues
(a :class:`.events.PoolLoad`); :func:`advise` answers one step:

* grow by one when the queue was non-empty on two observations in a row, or
  when every ready worker is busy; never while a previous step is still
  booting, and at most one step per ``step_interval``;
* shrink by one after ``calm_after`` seconds of calm (an empty queue and no
  more busy workers than the floor), one step per calm period; the worker
  retired is the one idle longest.

:class:`Autoscaler` keeps the memory between observations (the last step,
since when it is calm, since when each worker is idle) and the workers added
above the floor, so that moving the floor moves the pool with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Mapping, Optional, Sequence

STEP_INTERVAL = 1.0


@dataclass(frozen=True)
class Observation:
    """One look at the pool: ``ready`` workers serving, ``busy`` of them in a
    request, ``queue`` connections waiting to be accepted (all listeners)."""

    now: float
    busy: int
    ready: int
    queue: int


@dataclass(frozen=True)
class Step:
    """+1 (grow), -1 (shrink) or 0, and why."""

    change: int = 0
    reason: str = ""


def advise(seen: Observation, *, floor: int, ceiling: int, size: int, queued_before: bool,
           last_step: float, calm_since: Optional[float], calm_after: float,
           step_interval: float = STEP_INTERVAL) -> Step:
    """The one step the pool should take now, if any (pure)."""
    queued = seen.queue > 0
    if size < ceiling and seen.ready >= size and seen.now - last_step >= step_interval:
        if queued and queued_before:
            return Step(+1, f"listen queue {seen.queue}")
        if seen.ready and seen.busy >= seen.ready:
            return Step(+1, "every worker busy")
    if size > floor and calm_since is not None and seen.now - calm_since >= calm_after:
        return Step(-1, "calm")
    return Step()


def is_calm(seen: Observation, floor: int) -> bool:
    """No queue, and no more busy workers than the floor would serve."""
    return seen.queue == 0 and seen.busy <= floor


@dataclass(frozen=True)
class Decision:
    """What the arbiter does: ``change`` the pool, retiring ``retire`` (a PID) on
    a shrink; ``text`` is the log line."""

    change: int = 0
    retire: int = 0
    text: str = ""


@dataclass
class Autoscaler:
    """The adaptive pool's memory; ``ceiling`` 0 means off (the pool is the floor)."""

    ceiling: int = 0
    calm_after: float = 30.0
    step_interval: float = STEP_INTERVAL
    extra: int = 0                      # workers above the floor
    last_step: float = float("-inf")
    calm_since: Optional[float] = None
    queued_before: bool = False
    idle_since: Dict[int, float] = field(default_factory=dict)
    steps: Dict[str, int] = field(default_factory=lambda: {"grow": 0, "shrink": 0})

    def tuning(self) -> tuple:
        """(ceiling, calm_after): what a reload may change and an aborted one restores."""
        return self.ceiling, self.calm_after

    def retune(self, ceiling: int, calm_after: float) -> None:
        """New settings (HUP): the pool moves toward them one step at a time as usual;
        a lower ceiling is applied by :meth:`size` at once."""
        self.ceiling, self.calm_after = ceiling, calm_after
        if not ceiling:
            self.extra, self.calm_since, self.queued_before = 0, None, False
            self.idle_since.clear()

    def size(self, floor: int) -> int:
        """The pool size for ``floor``: floor + extra, within [floor, ceiling]."""
        if not self.ceiling:
            return floor
        return max(floor, min(floor + self.extra, self.ceiling))

    def observe(self, now: float, floor: int, busy: Mapping[int, bool], queue: int,
                live: Sequence[int]) -> Decision:
        """Take one observation of the ``live`` (ready, current) workers, ``busy``
        saying by PID which are in a request, ``queue`` connections waiting; decide."""
        if not self.ceiling:
            return Decision()
        for pid in list(self.idle_since):
            if pid not in live or busy.get(pid):
                del self.idle_since[pid]
        for pid in live:
            if not busy.get(pid):
                self.idle_since.setdefault(pid, now)
        seen = Observation(now, sum(1 for pid in live if busy.get(pid)), len(live), queue)
        size = self.size(floor)
        self.extra = size - floor
        if not is_calm(seen, floor):
            self.calm_since = None
        elif self.calm_since is None:
            self.calm_since = now
        step = advise(seen, floor=floor, ceiling=max(floor, self.ceiling), size=size,
                      queued_before=self.queued_before, last_step=self.last_step,
                      calm_since=self.calm_since, calm_after=self.calm_after,
                      step_interval=self.step_interval)
        self.queued_before = queue > 0
        if step.change > 0:
            return self._step(now, +1, f"pool: growing to {size + 1} ({step.reason})")
        if step.change < 0:
            idle = [pid for pid in live if pid in self.idle_since]
            if not idle:
                return Decision()
            pid = min(idle, key=lambda p: (self.idle_since[p], -p))
            idle_for = now - self.idle_since.pop(pid)
            self.calm_since = now       # the next step needs a calm period of its own
            return self._step(now, -1, f"pool: retiring worker {pid} (idle {idle_for:.0f} s, "
                                       f"{step.reason}); shrinking to {size - 1}", pid)
        return Decision()

    def _step(self, now: float, change: int, text: str, retire: int = 0) -> Decision:
        self.steps["grow" if change > 0 else "shrink"] += 1
        self.extra += change
        self.last_step = now
        return Decision(change, retire, text)
