"""Signal, then KILL: the one way the arbiter ends a process that does not end.

Every process the master waits on carries an :class:`Escalation`.  Once
armed it names a deadline and what happens there: a first signal (ABRT,
so that faulthandler writes what holds a worker; QUIT, for a new master
that did not come up) and KILL a grace period later, or KILL at once.  The
arbiter asks :meth:`Escalation.due` on every Tick and only chooses the
words of the log line; the timing is the same for workers and new masters.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from typing import Optional

ABORT_GRACE = 2.0       # seconds faulthandler gets to dump a traceback before KILL
FAST_STOP_GRACE = 2.0   # seconds a worker told to QUIT gets before KILL
KILL_GRACE = 5.0        # seconds a new master told to QUIT gets before KILL


@dataclass
class Escalation:
    at: Optional[float] = None   # when the next signal is due; None: none is
    first: int = 0               # the signal due at ``at`` before KILL; 0: KILL at ``at``
    grace: float = 0.0           # from ``first`` to KILL
    warned: bool = False         # ``first`` was sent
    killed: bool = False         # KILL was sent: nothing more to do

    @property
    def armed(self) -> bool:
        return self.at is not None

    def arm(self, at: float, first: int = 0, grace: float = 0.0) -> None:
        """Send ``first`` at ``at`` (KILL when 0) and KILL ``grace`` later.

        A deadline armed earlier and due sooner stands: a second stop never
        gives a process more time than the first one did.
        """
        self.at = at if self.at is None else min(self.at, at)
        self.first, self.grace = first, grace

    def due(self, now: float) -> Optional[int]:
        """The signal to send at ``now``, if one is due; the next step is armed."""
        if self.at is None or now < self.at:
            return None
        if self.first:
            sig, self.first, self.warned = self.first, 0, True
            self.at = now + self.grace
            return sig
        self.at, self.killed = None, True
        return signal.SIGKILL
