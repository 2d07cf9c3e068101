"""What the master answers on its control socket, as a function with no I/O.

:func:`answer` turns one request into a reply and the events the master
then feeds its arbiter, so steering the pool through the control socket
takes the same road as a signal does, and every command is a unit test.
"""

from __future__ import annotations

import os
import signal
from typing import Any, Callable, Dict, List, Tuple

from .events import ReloadFailed, Scale, Signal

Reply = Dict[str, Any]


def answer(message: Dict[str, Any], snapshot: Callable[[], Dict[str, Any]],
           reload: Callable[[], List[object]], pool_size: int) -> Tuple[Reply, List[object]]:
    """The reply to ``message`` and the events it causes.

    ``snapshot`` gives the status report; ``reload`` starts a reload (or, with
    preload, an upgrade) and returns its events; ``pool_size`` is the current
    target, for relative scaling.
    """
    command = message.get("cmd")
    pid = os.getpid()
    if command == "status":
        return {"ok": True, **snapshot()}, []
    if command == "reload":
        events = reload()
        if events and isinstance(events[0], ReloadFailed):
            return {"ok": False, "error": f"reload failed: {events[0].reason}"}, events
        return {"ok": True, "pid": pid, "upgrade": not events}, events
    if command == "stop":
        sig = signal.SIGQUIT if message.get("fast") else signal.SIGTERM
        return {"ok": True, "pid": pid}, [Signal(sig)]
    if command == "scale":
        workers = message.get("workers")
        if not isinstance(workers, int) or isinstance(workers, bool):
            return {"ok": False, "error": "scale needs an integer 'workers'"}, []
        if message.get("relative"):
            workers += pool_size
        return {"ok": True, "pid": pid, "workers": max(1, workers)}, [Scale(workers)]
    return {"ok": False, "error": f"unknown command {command!r}"}, []
