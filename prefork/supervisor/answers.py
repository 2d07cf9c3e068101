"""What the master answers on its control socket, as a function with no I/O.

:func:`answer` turns one request into the events it causes and hands them
to ``steer``, which feeds them to the arbiter at once and says what
followed.  Steering through the control socket thus takes the same road as
a signal does, and the reply is read off the outcome: it states what the
arbiter decided, not what was asked (a reload with a bad config says why;
``scale`` says the size the arbiter applied).  Every command is a unit test.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from typing import Any, Callable, Dict, List

from .events import (Refused, ReloadFailed, ReloadWanted, Scale, Signal, StartUpgrade,
                     UpgradeFailed)

Reply = Dict[str, Any]


@dataclass
class Outcome:
    """What feeding a request's events led to."""

    trail: List[object]    # every event fed and every action decided, in order
    pool_size: int         # the arbiter's target afterwards
    grows_to: int = 0      # the adaptive pool's ceiling above that floor (0: none)


def answer(message: Dict[str, Any], snapshot: Callable[[], Dict[str, Any]],
           steer: Callable[[List[object]], Outcome]) -> Reply:
    """The reply to ``message``; ``snapshot`` gives the status report."""
    command = message.get("cmd")
    pid = os.getpid()
    if command == "status":
        return {"ok": True, **snapshot()}
    if command == "reload":
        return _reload_reply(steer([ReloadWanted("reload")]).trail, pid)
    if command == "stop":
        steer([Signal(signal.SIGQUIT if message.get("fast") else signal.SIGTERM)])
        return {"ok": True, "pid": pid}
    if command == "scale":
        workers = message.get("workers")
        if not isinstance(workers, int) or isinstance(workers, bool):
            return {"ok": False, "error": "scale needs an integer 'workers'"}
        outcome = steer([Scale(workers, relative=bool(message.get("relative")))])
        refused = [a.text for a in outcome.trail if isinstance(a, Refused)]
        if refused:
            return {"ok": False, "error": refused[0]}
        reply: Reply = {"ok": True, "pid": pid, "workers": outcome.pool_size}
        if outcome.grows_to:      # the size set is the floor the pool grows from
            reply["workers_max"] = outcome.grows_to
        return reply
    return {"ok": False, "error": f"unknown command {command!r}"}


def _reload_reply(trail: List[object], pid: int) -> Reply:
    """A reload loads the config (LoadConfig: Reload or ReloadFailed follows at once)
    or, with preload, starts a new master, whose fate is known only later."""
    upgrade = False
    for item in trail:
        if isinstance(item, Refused):
            return {"ok": False, "error": item.text}
        if isinstance(item, ReloadFailed):
            return {"ok": False, "error": f"reload failed: {item.reason}"}
        if isinstance(item, UpgradeFailed):
            return {"ok": False, "error": f"upgrade failed: {item.reason}"}
        upgrade = upgrade or isinstance(item, StartUpgrade)
    return {"ok": True, "pid": pid, "upgrade": upgrade}
