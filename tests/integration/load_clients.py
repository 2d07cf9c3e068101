"""Looping HTTP clients for the tests that change the server under load.

A :class:`Load` runs ``clients`` threads against an address until stopped;
each counts what succeeded and records what failed.  Half of them keep one
connection open (reconnecting only when the server says Connection: close),
half open a new connection per request, so both ways a deploy can lose a
request are covered.
"""

from __future__ import annotations

import http.client
import signal
import threading
import time
from typing import Callable, List, Optional


class Load:
    def __init__(self, address: tuple, clients: int = 8, path: str = "/hello/",
                 check: Optional[Callable[[bytes], bool]] = None) -> None:
        self.address = address
        self.path = path
        self.check = check or (lambda body: bool(body))
        self.ok = 0
        self.failed: List[str] = []
        self.bodies: List[bytes] = []     # in the order they arrived
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._loop, args=(i % 2 == 0,), daemon=True)
                         for i in range(clients)]

    def __enter__(self) -> "Load":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(15)

    def count(self) -> int:
        with self._lock:
            return self.ok

    def _loop(self, keepalive: bool) -> None:
        conn = http.client.HTTPConnection(*self.address, timeout=10)
        n = 0
        while not self._stop.is_set():
            n += 1
            body = b""
            try:
                conn.request("GET", f"{self.path}?n={n}")
                response = conn.getresponse()
                body = response.read()
                ok = response.status == 200 and self.check(body)
                outcome = None if ok else f"status {response.status}: {body[:80]!r}"
                if not keepalive or response.getheader("Connection", "").lower() == "close":
                    conn.close()    # http.client reconnects on the next request
            except (OSError, http.client.HTTPException) as exc:
                outcome = repr(exc)
                conn.close()
            with self._lock:
                if outcome is None:
                    self.ok += 1
                    self.bodies.append(body)
                else:
                    self.failed.append(outcome)
        conn.close()


def keepalive_loop(address: tuple, stop: threading.Event, stats: dict, lock: threading.Lock,
                   path: str = "/hello/") -> None:
    """Requests on one persistent connection until ``stop``, reconnecting only when
    told to close; ``stats["ok"]`` counts successes, ``stats["failed"]`` lists the rest."""
    conn = http.client.HTTPConnection(*address, timeout=10)
    n = 0
    while not stop.is_set():
        n += 1
        try:
            conn.request("GET", f"{path}?n={n}")
            response = conn.getresponse()
            body = response.read()
            outcome = None if response.status == 200 and body else f"status {response.status}"
            if response.getheader("Connection", "").lower() == "close":
                conn.close()    # http.client reconnects on the next request
        except (OSError, http.client.HTTPException) as exc:
            outcome = repr(exc)
            conn.close()
        with lock:
            if outcome is None:
                stats["ok"] += 1
            else:
                stats["failed"].append(outcome)
    conn.close()


def hups_under_keepalive_load(served, path: str, clients: int, reloads: int) -> dict:
    """HUP ``served`` ``reloads`` times while ``clients`` keep-alive loops request
    ``path``, each reload awaited; returns their stats (``ok``, ``failed``)."""
    stop, lock = threading.Event(), threading.Lock()
    stats: dict = {"ok": 0, "failed": []}
    threads = [threading.Thread(target=keepalive_loop,
                                args=(served.address, stop, stats, lock, path))
               for _ in range(clients)]
    for thread in threads:
        thread.start()
    try:
        for n in range(1, reloads + 1):
            served.proc.signal(signal.SIGHUP)
            served.proc.wait_for(r"reload complete", count=n, timeout=30)
            time.sleep(0.5)     # load between reloads, not a synchronisation
    finally:
        stop.set()
        for thread in threads:
            thread.join(15)
    return stats
