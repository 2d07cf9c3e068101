"""Load while reloading, and a graceful stop under load (issue 7).

wrk holds 64 keep-alive connections on ``/hello/`` of two workers while
the master is HUPed, upgraded with USR2, grown and shrunk with TTIN/TTOU,
or recycles its workers every 50 requests: not one socket error, not one
non-2xx response, and no request left unanswered (wrk does not count
those; ``hung_requests`` asks the kernel).  The quick form runs each for
5 s with a signal every second; the long form is the issue's 20 s with
one every 2 s.  A response wrk waited more than 5 s for counts against
the server unless a CPU of the machine froze meanwhile (``Watchdog``).

Graceful stop: under wrk, TERM must answer every request that reached the
server before it, including connections still waiting in the kernel's
accept queue: a worker drains the queue before it closes its copy of the
listener, and the last close would reset whatever is left.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional

import pytest

from conftest import seconds
from harness import pid_alive, wait_until
from http_helpers import read_response
from load import WrkResult, finish_wrk, need_wrk, start_wrk

pytestmark = pytest.mark.integration

LOAD = seconds(5, 20)        # seconds of wrk per scenario
EVERY = seconds(1.0, 2.0)    # seconds between two signals
TIMEOUT = 90 if LOAD < 10 else 180    # hard cap per scenario (pytest-timeout)
HANDED_OVER = r"upgrade: the new master (\d+) is serving"
# What a clean run never logs: a crash, a worker lost, a graceful stop cut short.
TROUBLE = re.compile(r"\[(ERROR|CRITICAL)\]|Traceback|unexpectedly|did not stop|"
                     r"graceful_timeout passed|upgrade failed|reload failed")
HUNG = 5.0     # seconds a wrk connection may wait for a response (wrk's --timeout)
STALL = 2.0    # seconds a CPU ran nothing of ours (Watchdog): the machine froze, not the server
# A step's deadline (a reload, a hand-over, a worker booting or leaving): seconds on a
# quiet machine, but a loaded one can take many; a worker that never boots is aborted
# by the master at its 30 s timeout, which the log check catches.
STEP = 30.0


def serve(prefork_server, kind: str, *args: str, keepalive: float = 30.0):
    """Two workers of ``kind`` serving wsgiapps:router.

    wrk's connections are never idle, except when the machine freezes (see
    Watchdog): a freeze longer than the keep-alive timeout would make the
    server close connections wrk is about to send on, HTTP keep-alive's own
    race, so the load scenarios keep them open for 30 s.
    """
    server = prefork_server("serve", "wsgiapps:router", "-b", "127.0.0.1:0", "-w", "2",
                            "-k", kind, "--keepalive", str(keepalive), *args)
    server.wait_ready()
    return server


class Watchdog:
    """The longest any CPU went without running a thread of ours, while the scenario ran.

    A loaded virtual machine can freeze a virtual CPU, or all of them, for
    seconds; wrk then finds the responses it was waiting for older than its
    ``--timeout`` and counts them as timeouts, though the server did nothing
    wrong.  One thread pinned to each CPU ticks every TICK seconds: a freeze
    shows as a gap between two of its ticks.
    """

    TICK = 0.01

    def __init__(self) -> None:
        self.worst = 0.0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(cpu,), daemon=True)
                         for cpu in sorted(os.sched_getaffinity(0))]

    def __enter__(self) -> "Watchdog":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(5)

    def _run(self, cpu: int) -> None:
        os.sched_setaffinity(0, {cpu})      # 0: this thread only
        last = time.monotonic()
        while not self._stop.wait(self.TICK):
            now = time.monotonic()
            self.worst = max(self.worst, now - last - self.TICK)
            last = now


def hung_requests(port: int) -> Optional[int]:
    """wrk connections to ``port`` that sent a request and got nothing back for HUNG s.

    wrk sends the next request the moment a response is complete, so an
    established connection silent both ways that long holds a request the
    server never answered.  wrk itself never counts one: its timeouts are
    responses that came late, and a response that never comes is not one.
    None where ``ss`` (iproute2) is missing.
    """
    ss = shutil.which("ss")
    if ss is None:
        return None
    out = subprocess.run([ss, "-tniH", "state", "established", f"( dport = :{port} )"],
                         capture_output=True, text=True, timeout=10).stdout
    hung = 0
    for info in re.split(r"\n(?=\S)", out.strip()) if out.strip() else []:
        idle = [re.search(rf"\b{what}:(\d+)", info) for what in ("lastsnd", "lastrcv")]
        if all(m is not None and int(m.group(1)) > HUNG * 1000 for m in idle):
            hung += 1
    return hung


@dataclass
class LoadRun:
    wrk: WrkResult
    steps: int
    hung: Optional[int]
    stall: float

    def counts(self) -> dict:
        return {**self.wrk.counts(), "timeouts": self.wrk.timeout, "hung": self.hung,
                "stall_s": round(self.stall, 1)}


def under_load(server, step: Optional[Callable[[int], None]] = None,
               path: str = "/hello/") -> LoadRun:
    """wrk at 64 connections for LOAD seconds, with ``step(n)`` every EVERY seconds.

    ``step`` sends its signal and waits until the server says it acted on it;
    the sleeps in between only pace the signals.  A slow machine stretches
    the load rather than cutting the last step short: wrk runs until EVERY
    after the last step is done (and LOAD at least); then the connections
    are checked for requests left unanswered, and wrk is interrupted, which
    makes it print its counts.
    """
    need_wrk()
    steps = max(1, round(LOAD / EVERY) - 1) if step is not None else 0
    wrk = start_wrk(server.address, 3 * LOAD + 60, path=path)
    began = time.monotonic()
    try:
        with Watchdog() as watchdog:
            for n in range(1, steps + 1):
                pause = began + n * EVERY - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                step(n)
            time.sleep(max(began + LOAD - time.monotonic(), EVERY))
            hung = hung_requests(server.address[1])
            assert wrk.poll() is None, "wrk ended before the steps were done"
            wrk.send_signal(signal.SIGINT)
            result = finish_wrk(wrk, timeout=30)
        return LoadRun(result, steps, hung, watchdog.worst)
    finally:
        if wrk.poll() is None:
            wrk.kill()
            wrk.wait()


def assert_clean(run: LoadRun, server) -> None:
    result = run.wrk
    assert result.requests > 1000, result
    assert result.connect + result.read + result.write == 0, result
    # A response later than wrk's 5 s is a timeout: the server's, unless a CPU froze.
    assert result.timeout == 0 or run.stall >= STALL, (result, f"longest freeze {run.stall:.1f} s")
    assert result.non_2xx == 0, result
    assert not run.hung, f"{run.hung} request(s) unanswered for {HUNG} s"
    trouble = [line for line in server.log().splitlines() if TROUBLE.search(line)]
    assert trouble == [], trouble[:10]


# -- load while reloading -------------------------------------------------------


@pytest.mark.timeout(TIMEOUT)
@pytest.mark.parametrize("kind", ["sync", "thread"])
def test_hup_under_wrk_loses_nothing(prefork_server, figures, kind):
    server = serve(prefork_server, kind)
    first = server.wait_workers(lambda pids: len(pids) == 2)

    def hup(n: int) -> None:
        server.signal(signal.SIGHUP)
        server.wait_for(r"reload complete", count=n, timeout=STEP)

    run = under_load(server, hup)
    figures(scenario=f"HUP every {EVERY:g} s under wrk -c64", kind=kind, signals=run.steps,
            **run.counts())
    assert_clean(run, server)
    assert server.wait_for(rf"reload complete: generation {run.steps + 1} serving with 2 workers")
    assert not (server.live_workers() & first)


def usr2_step(server, masters: List[int]) -> Callable[[int], None]:
    """The signal step of a USR2-under-load test: upgrade, then follow and note
    the new master (``masters``)."""
    def upgrade(n: int) -> None:
        server.signal(signal.SIGUSR2)
        new = int(server.wait_for(HANDED_OVER, count=n, timeout=STEP)[-1].group(1))
        server.follow_master(new)
        masters.append(new)
    return upgrade


@pytest.mark.timeout(TIMEOUT + 30)
def test_usr2_upgrades_under_wrk_lose_nothing(prefork_server, figures):
    server = serve(prefork_server, "sync")
    upgrades_under_load(server, figures, "sync")


def upgrades_under_load(server, figures, kind: str) -> None:
    """USR2 every EVERY s under wrk: every old master stops by itself (the first one,
    the test's child, cleanly), the last one serves, no request is lost."""
    masters: List[int] = [server.pid]
    run = under_load(server, usr2_step(server, masters))
    figures(scenario=f"USR2 every {EVERY:g} s under wrk -c64", kind=kind, signals=run.steps,
            **run.counts())
    for old in masters[:-1]:
        wait_until(lambda: not pid_alive(old), 15, f"old master {old} to exit")
    assert server.proc.wait(5) == 0
    assert pid_alive(masters[-1]) and len(set(masters)) == run.steps + 1
    assert_clean(run, server)


@pytest.mark.timeout(TIMEOUT)
def test_ttin_ttou_under_wrk_lose_nothing(prefork_server, figures):
    kind = "sync"
    server = serve(prefork_server, kind)
    ready = r"worker ready \(gen"
    exits = r"\] worker exiting"

    def scale(n: int) -> None:
        # Odd steps: a third worker, up and ready; even: back to 2, the third gone.
        if n % 2:
            server.signal(signal.SIGTTIN)
            server.wait_for(r"TTIN: pool size 3", count=(n + 1) // 2, timeout=STEP)
            server.wait_for(ready, count=2 + (n + 1) // 2, timeout=STEP)
        else:
            server.signal(signal.SIGTTOU)
            server.wait_for(r"TTOU: pool size 2", count=n // 2, timeout=STEP)
            server.wait_for(exits, count=n // 2, timeout=STEP)

    run = under_load(server, scale)
    figures(scenario=f"TTIN/TTOU alternating every {EVERY:g} s under wrk -c64", kind=kind,
            signals=run.steps, **run.counts())
    assert_clean(run, server)
    server.wait_workers(lambda pids: len(pids) == 2 + run.steps % 2)


@pytest.mark.timeout(TIMEOUT)
@pytest.mark.parametrize("kind", ["sync", "thread"])
def test_max_requests_recycling_under_wrk_loses_nothing(prefork_server, figures, kind):
    server = serve(prefork_server, kind, "--max-requests", "50", "--max-requests-jitter", "0")
    run = under_load(server)
    recycles = len(re.findall(r"reached max_requests", server.log()))
    figures(scenario="max_requests=50 under wrk -c64", kind=kind, recycles=recycles,
            **run.counts())
    assert_clean(run, server)
    # wrk's 64 connections each make a request count on a worker: with 50 a worker is
    # recycled about as fast as its replacement boots.
    assert recycles >= 10, recycles


# -- graceful stop under load -------------------------------------------------------


def send_requests(address: tuple, count: int, path: str = "/hello/") -> List[socket.socket]:
    """``count`` connections, each with a whole request sent (connect() returned: the
    handshake is done, so the kernel has queued the connection for accept)."""
    clients = []
    for n in range(count):
        s = socket.create_connection(address, timeout=10)
        s.sendall(f"GET {path}?n={n} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
        clients.append(s)
    return clients


def answers(clients: List[socket.socket]) -> List[str]:
    """What each connection got: "ok" for a whole 200 hello, or what went wrong."""
    outcomes = []
    for s in clients:
        try:
            with s, s.makefile("rb") as reader:
                response = read_response(reader)
            if response is None:
                outcomes.append("closed without a response")
            elif response.status != 200 or not response.complete:
                outcomes.append(repr(response))
            else:
                outcomes.append("ok")
        except (OSError, AssertionError) as exc:
            outcomes.append(repr(exc))
    return outcomes


def accept_queue(port: int) -> Optional[int]:
    """Connections waiting in the accept queue of the listener on 127.0.0.1:port."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state, queues = fields[1], fields[3], fields[4]
        if state == "0A" and local == f"0100007F:{port:04X}":
            return int(queues.split(":")[1], 16)    # rx_queue of a listener: its backlog
    return None


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["sync", "thread"])
def test_graceful_stop_under_wrk_answers_every_request_sent_before_term(
        prefork_server, figures, kind):
    grace = 10.0
    # The 32 requests are HTTP/1.1 keep-alive: those answered before TERM leave idle
    # connections, which a stopping worker closes at their keep-alive deadline.
    server = serve(prefork_server, kind, "--graceful-timeout", str(grace), keepalive=1)
    before = seconds(1, 10)
    wrk = start_wrk(server.address, 3 * before + 60, path="/hello/")
    try:
        time.sleep(before)      # load for a while: pacing, not synchronisation
        clients = send_requests(server.address, 32)
        stopped = time.monotonic()
        server.signal(signal.SIGTERM)
        assert server.wait_exit(grace + 5) == 0
        took = time.monotonic() - stopped
        assert wrk.poll() is None, "wrk ended before the stop"
        wrk.send_signal(signal.SIGINT)     # wrk prints its counts
        result = finish_wrk(wrk, timeout=30)
        outcomes = answers(clients)
    finally:
        if wrk.poll() is None:
            wrk.kill()
            wrk.wait()
    figures(scenario="TERM under wrk -c64, 32 requests sent just before", kind=kind,
            stop_seconds=round(took, 2), answered=outcomes.count("ok"),
            **{"wrk_" + k: v for k, v in result.counts().items()},
            wrk_refused=result.connect + result.write, wrk_reset=result.read,
            wrk_timeout=result.timeout)
    assert outcomes == ["ok"] * len(clients), [o for o in outcomes if o != "ok"][:5]
    # After TERM wrk's reconnections are refused (wrk counts a refused non-blocking
    # connect as a write error), or reset if they came in after the last worker's
    # drain; but every response it did get was a 2xx.
    assert result.non_2xx == 0 and result.requests > 1000, result
    assert took < grace
    trouble = [line for line in server.log().splitlines() if TROUBLE.search(line)]
    assert trouble == [], trouble[:10]
    assert not server.live_workers()


@pytest.mark.timeout(60)
def test_connections_in_the_accept_queue_at_term_are_served_not_reset(prefork_server, figures):
    # --keepalive 1: the two slow requests are answered (keep-alive) before their
    # workers see the TERM, and a stopping worker closes an idle connection at its
    # keep-alive deadline.
    grace = 10.0
    server = serve(prefork_server, "sync", "--graceful-timeout", str(grace), keepalive=1)
    port = server.address[1]
    # Both sync workers busy in the app: whatever connects now waits in the kernel.
    slow = []
    for name in ("a", "b"):
        slow += send_requests(server.address, 1, f"/slow/?t=1.5&id={name}")
        server.wait_for(rf"slow: start {name}")
    queued = send_requests(server.address, 64)
    wait_until(lambda: accept_queue(port) == 64, 5, "64 connections in the accept queue")
    stopped = time.monotonic()
    server.signal(signal.SIGTERM)
    assert server.wait_exit(grace + 5) == 0
    assert time.monotonic() - stopped < grace
    outcomes = answers(queued)
    slow_outcomes = answers(slow)
    figures(scenario="TERM with 64 connections in the accept queue", queued=64,
            answered=outcomes.count("ok"))
    assert slow_outcomes == ["ok", "ok"]
    assert outcomes == ["ok"] * 64, [o for o in outcomes if o != "ok"][:5]
    server.wait_for(r"graceful stop")
