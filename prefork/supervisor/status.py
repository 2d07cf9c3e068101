"""The pool as data: what ``prefork status`` shows, read from the arbiter and the scoreboard."""

from __future__ import annotations

import os
import time
from typing import Any, Dict, List, Sequence

from ..procfs import rss_bytes, start_time
from ..scoreboard import STATE_NAMES, Scoreboard
from ..sockets import Listener, listen_queue
from .arbiter import Arbiter


def snapshot(arbiter: Arbiter, scoreboard: Scoreboard, target: str,
             listeners: Sequence[Listener] = ()) -> Dict[str, Any]:
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
            # The request running longest, known while show_requests is on.
            "doing": view.doing if view.running_since else None,
            "doing_for": round(max(0.0, now - view.running_since), 3)
            if view.running_since else None,
        })
    return {"pid": os.getpid(), "target": target, "generation": arbiter.generation,
            # The adaptive pool's current size; the floor (-w, TTIN/TTOU, scale) beside it.
            "workers_wanted": arbiter.wanted, "workers_floor": arbiter.target,
            "workers_max": arbiter.autoscale.ceiling or None,   # None: a fixed pool
            "pool_steps": dict(arbiter.autoscale.steps),
            "phase": arbiter.phase,
            "reloading": arbiter.reloading and bool(arbiter.stable),
            "rss": rss_bytes(os.getpid()), "started": start_time(os.getpid()),
            "workers": workers, "listeners": listener_queues(listeners),
            "reloads": arbiter.reloads, "restarts": dict(arbiter.restarts)}


def listener_queues(listeners: Sequence[Listener]) -> List[Dict[str, Any]]:
    """Each listener's name, the connections waiting in its accept queue and its
    backlog (as the kernel applies it: clamped by net.core.somaxconn).  Both are
    None where the master's socket does not listen (datagram, reuse_port) or the
    OS does not tell."""
    found = []
    for listener in listeners:
        queue = listen_queue(listener.sock)
        found.append({"name": listener.name, "queue": queue[0] if queue else None,
                      "backlog": queue[1] if queue else None})
    return found
