"""USR2 as the old master decides it: start a new master, then hand over or give up.

Pure, like the arbiter, which owns one :class:`Upgrades` and passes it the
upgrade's events.  One upgrade at a time, through these steps:

- asked: StartUpgrade was sent; the PID is not known yet.
- started (UpgradeStarted): ``upgrade_timeout`` is armed; past it the new
  master gets QUIT, then KILL (the arbiter's one escalation path).
- ready (UpgradeReady): hand over; the arbiter then stops gracefully.
- failed (UpgradeFailed, or its exit first): logged once; it is still
  waited for, so that no second new master starts beside a dying one.

A stop before the hand-over abandons the upgrade: the new master gets QUIT
and is forgotten, so that it cannot come up after the old one left.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, field
from typing import List, Optional

from .escalation import KILL_GRACE, Escalation
from .events import (ChildExited, HandOver, Kill, Log, Notify, Refused, StartUpgrade,
                     UpgradeFailed, UpgradeReady, UpgradeStarted)
from .health import describe_exit


@dataclass
class Successor:
    """The new master of the upgrade in progress."""

    why: str                 # what asked for it: "USR2", "HUP with preload", ...
    timeout: float           # upgrade_timeout
    pid: int = 0             # 0 until it is forked
    failed: bool = False     # its failure was logged; it is only to be reaped now
    stop: Escalation = field(default_factory=Escalation)


class Upgrades:
    """The old master's side of upgrades; ``pid`` is this master's, for the log lines."""

    def __init__(self) -> None:
        self.successor: Optional[Successor] = None
        self.handed_over = False    # the service is the new master's now
        self.pid = 0

    def begin(self, why: str, generation: int, timeout: float,
              stopping: bool) -> List[object]:
        """USR2 (or a HUP with preload): start a new master unless one is on its way."""
        s = self.successor
        if stopping or s is not None:
            busy = "stopping" if stopping else (f"new master {s.pid} is starting" if s.pid
                                                else "a new master is starting")
            return [Refused("warning", f"{why}: cannot upgrade now ({busy}); ignored")]
        self.successor = Successor(why, timeout)
        return [StartUpgrade(generation)]

    def started(self, event: UpgradeStarted, now: float, stopping: bool) -> List[object]:
        s = self.successor
        if s is None or s.pid:
            return []
        s.pid = event.pid
        actions: List[object] = [Log("info", f"{s.why}: upgrading: started a new master, "
                                             f"PID {s.pid}")]
        if stopping:    # a stop was decided while it was being forked
            return actions + self.abandon()
        s.stop.arm(now + s.timeout, first=signal.SIGQUIT, grace=KILL_GRACE)
        return actions

    def failed(self, event: UpgradeFailed) -> List[object]:
        s = self.successor
        if s is None or s.pid != event.pid or s.failed:
            return []
        if not s.pid:    # not even forked: there is nothing to wait for
            self.successor = None
            return [Log("error", f"{s.why}: upgrade failed: {event.reason}")]
        s.failed = True
        return [self._failure(event.reason)]

    def ready(self, event: UpgradeReady) -> List[object]:
        """The new master serves: hand over (the arbiter then stops gracefully)."""
        s = self.successor
        if s is None or s.pid != event.pid or s.failed:
            return []
        if s.stop.warned:    # it was told to QUIT: it is stopping, not serving
            return [Log("warning", f"upgrade: the new master {s.pid} said it was ready after "
                                   "it was told to quit; ignored")]
        self.successor, self.handed_over = None, True
        return [Log("info", f"upgrade: the new master {s.pid} is serving; this master "
                            f"(PID {self.pid}) stops gracefully"),
                Notify(f"MAINPID={s.pid}\nREADY=1\nSTATUS=upgraded: master {s.pid} serving"),
                HandOver(s.pid)]

    def owns(self, pid: int) -> bool:
        return self.successor is not None and self.successor.pid == pid != 0

    def exited(self, event: ChildExited) -> List[object]:
        """The new master exited before it was ready (a failure not yet told, or told)."""
        s, self.successor = self.successor, None
        if s is None or s.failed:
            return []
        return [self._failure(f"the new master {describe_exit(event.code)}")]

    def abandon(self) -> List[object]:
        """The old master stops: the new one must not come up after it left."""
        s = self.successor
        if s is None or not s.pid:     # still being forked: abandoned once its PID is known
            return []
        self.successor = None
        return [Log("warning", "stopping: the upgrade is abandoned; sending SIGQUIT to the new "
                               f"master {s.pid}"), Kill(s.pid, signal.SIGQUIT)]

    def tick(self, now: float) -> List[object]:
        """Past upgrade_timeout: QUIT, then KILL."""
        s = self.successor
        sig = s.stop.due(now) if s is not None else None
        if sig is None:
            return []
        return [Log("error", f"upgrade: the new master {s.pid} is not ready after "
                             f"{s.timeout:.0f} s; sending {signal.Signals(sig).name}"),
                Kill(s.pid, sig)]

    def deadline(self) -> Optional[float]:
        return self.successor.stop.at if self.successor is not None else None

    def _failure(self, reason: str) -> Log:
        return Log("error", f"upgrade failed: {reason}; this master (PID {self.pid}) "
                            "keeps serving")
