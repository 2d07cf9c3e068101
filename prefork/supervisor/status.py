"""The pool as data: what ``prefork status`` shows, read from the arbiter and the scoreboard."""

from __future__ import annotations

import os
import time
from typing import Any, Dict

from ..scoreboard import STATE_NAMES, Scoreboard
from .arbiter import Arbiter

_PAGE = os.sysconf("SC_PAGE_SIZE")
_TICKS = os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` from /proc, 0 if it cannot be read."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


def start_time(pid: int) -> float:
    """When ``pid`` started, in seconds since the Unix epoch (0.0 if /proc cannot tell).

    /proc/PID/stat gives it in clock ticks since boot; /proc/stat's btime is
    the boot time, which is how process exporters compute it too.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            ticks = int(f.read().rsplit(b")", 1)[1].split()[19])
        with open("/proc/stat", "rb") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith(b"btime "))
    except (OSError, ValueError, IndexError, StopIteration):
        return 0.0
    return boot + ticks / _TICKS


def snapshot(arbiter: Arbiter, scoreboard: Scoreboard, target: str) -> Dict[str, Any]:
    now = time.monotonic()
    workers = []
    for w in sorted(arbiter.workers.values(), key=lambda w: (w.generation, w.pid)):
        view = scoreboard.read(w.slot)
        state = STATE_NAMES.get(view.state, "?")
        if w.retiring:
            state = "retiring"
        busy = view.connections > 0
        since = view.request_start or view.booted   # idle since boot if it never served
        workers.append({
            "pid": w.pid, "generation": w.generation, "state": state,
            "busy": busy, "for": round(max(0.0, now - since), 3) if view.pid else 0.0,
            "age": round(now - w.started, 3), "requests": view.requests,
            "connections": view.connections, "rss": rss_bytes(w.pid),
            "busy_seconds": round(view.busy_seconds, 6),
        })
    return {"pid": os.getpid(), "target": target, "generation": arbiter.generation,
            "workers_wanted": arbiter.target, "phase": arbiter.phase,
            "reloading": arbiter.reloading and bool(arbiter.stable),
            "rss": rss_bytes(os.getpid()), "started": start_time(os.getpid()),
            "workers": workers,
            "reloads": arbiter.reloads, "restarts": dict(arbiter.restarts)}
