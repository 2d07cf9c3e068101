"""What the arbiter knows of one worker, and how it is told to stop.

A module of its own so that :mod:`.health` (which judges a worker) and
:mod:`.arbiter` (which keeps them) both import it, and not each other.
Stopping a worker is a signal now and an :class:`.Escalation` armed for
later; the methods here pick the signal and the words of the log lines,
as :mod:`.successor` does for a new master.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, field
from typing import List

from .escalation import ABORT_GRACE, Escalation
from .events import Kill, Log

ABORTED = ("timeout", "request_timeout")   # the reasons a worker gets SIGABRT


@dataclass
class Worker:
    pid: int
    generation: int
    slot: int
    started: float
    ready: bool = False
    outgoing: bool = False      # its generation is being replaced by a reload
    recycle: str = ""           # why it is to be replaced: "max_requests", "max_rss"
    retiring: bool = False      # told to stop (TERM or QUIT): not counted any more
    why_stopped: str = ""       # "retired", "stop", or one of ABORTED: why we signalled it
    stop: Escalation = field(default_factory=Escalation)   # KILL if it does not exit

    @property
    def replaceable(self) -> bool:
        return self.outgoing or bool(self.recycle)

    def label(self) -> str:
        return f"worker {self.pid} (gen {self.generation})"

    def abort(self, reason: str, text: str, now: float) -> List[object]:
        """Stuck (``reason`` is one of ABORTED): faulthandler dumps its traceback, then KILL."""
        self.why_stopped, self.retiring = reason, True
        self.stop.arm(now + ABORT_GRACE)
        return [Log("error", f"{text}; dumping its traceback, then killing it"),
                Kill(self.pid, signal.SIGABRT)]

    def retire(self, now: float, graceful_timeout: float) -> List[object]:
        """Finish in-flight work and exit; ABRT (a traceback) at graceful_timeout, then KILL."""
        self.retiring, self.why_stopped = True, "retired"
        self.stop.arm(now + graceful_timeout, signal.SIGABRT, ABORT_GRACE)
        return [Kill(self.pid, signal.SIGTERM)]

    def tell_to_stop(self, graceful: bool, now: float, grace: float) -> List[object]:
        """The whole pool stops: TERM (dumped at most once, then KILL) or QUIT (then KILL)."""
        if self.stop.killed:
            return []
        self.retiring, self.why_stopped = True, "stop"
        dump = signal.SIGABRT if graceful and not self.stop.warned else 0
        self.stop.arm(now + grace, dump, ABORT_GRACE)
        return [Kill(self.pid, signal.SIGTERM if graceful else signal.SIGQUIT)]

    def escalate(self, now: float, graceful_timeout: float) -> List[object]:
        """What its stop deadline calls for at ``now``: nothing, ABRT or KILL."""
        sig = self.stop.due(now)
        if sig == signal.SIGABRT:
            # Still busy after graceful_timeout: whatever holds it is what the
            # operator needs to see, so faulthandler dumps it before the KILL.
            return [Log("error", f"{self.label()} did not stop within graceful_timeout "
                                 f"({float(graceful_timeout)} s); dumping its traceback, "
                                 "then killing it"), Kill(self.pid, sig)]
        if sig is None:
            return []
        if self.why_stopped in ABORTED or self.stop.warned:   # announced with the abort
            return [Kill(self.pid, sig)]
        return [Kill(self.pid, sig), Log("warning", f"{self.label()} did not stop in time; "
                                                    "killed")]
