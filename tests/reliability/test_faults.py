"""Faults under load (issue 7): workers and the master killed, handlers that leak or loop.

Every scenario runs wrk (64 keep-alive connections) against sync WSGI
workers serving tests/apps/fault_apps.py, injects a fault, and counts what
the load saw against a bound derived from what the fault could touch.

A sync WSGI worker keeps all its keep-alive connections in its selector,
so when it dies every connection it holds is lost, and with it at most one
request each: wrk either had a request on it (a read error) or sends the
next one into a closed socket (a write or read error), then reconnects.
A connection still in the listen queue belongs to no worker and survives.
So the bound on failed requests for a dead worker is the number of client
connections it held, read from /proc (the sockets it holds besides the
listeners it shares with its master) at a moment when that set cannot
grow: while the worker is stopped (SIGSTOP, then SIGKILL), or while it is
stuck in an endless handler (it accepts nothing more).  Under wrk every
held connection has a request on it, so the bound is usually met exactly.
"""

from __future__ import annotations

import os
import random
import re
import signal
import threading
import time
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple

import pytest

from conftest import seconds
from harness import PreforkProcess, free_port, pid_alive, wait_until
from http_helpers import Conn, get
from load import finish_wrk, need_wrk, start_wrk

from prefork.supervisor.control import request as control_request

pytestmark = pytest.mark.integration

APP = "fault_apps:app"
CONNECTIONS = 64
POLL = 0.005


class StallWatch:
    """How long this machine stopped running a process that only wants to wake up.

    One thread per CPU, pinned to it, sleeps 50 ms at a time and keeps the
    longest gap between two wake-ups beyond that.  Other work on a shared box,
    or the hypervisor taking a virtual CPU away, can stall whatever runs
    there for seconds; the scenarios record it next to their timings, so a
    slow figure can be told from a slow server.
    """

    def __init__(self) -> None:
        self.worst = 0.0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._watch, args=(cpu,), daemon=True)
                         for cpu in sorted(os.sched_getaffinity(0))]
        for thread in self._threads:
            thread.start()

    def _watch(self, cpu: int) -> None:
        os.sched_setaffinity(0, {cpu})     # on Linux, 0 is this thread only
        last = time.monotonic()
        while not self._stop.wait(0.05):
            now = time.monotonic()
            self.worst = max(self.worst, now - last - 0.05)
            last = now

    @property
    def worst_ms(self) -> int:
        return ms(self.worst)

    def excuse(self, needed_ms: int, what: str) -> None:
        """Skip, not fail, if a stall of ``needed_ms`` or more explains ``what``.

        Only called once a timing was missed: on a quiet machine (CI) the
        timings are asserted as they are.
        """
        if self.worst_ms >= needed_ms:
            pytest.skip(f"{what}, but this machine stopped running what was on one of its "
                        f"CPUs for up to {self.worst_ms} ms: the run proves nothing either way")

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(5)


@pytest.fixture
def stalls() -> Iterator[StallWatch]:
    watch = StallWatch()
    yield watch
    watch.close()


# -- what a process holds, from /proc -----------------------------------------

def _socket_inodes(pid: int) -> Set[str]:
    inodes = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return inodes
    for fd in fds:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    return inodes


def held_connections(pid: int, master: int) -> int:
    """Client connections worker ``pid`` holds open.

    A worker's only sockets are the listeners it inherited, which its master
    holds too, and the connections it accepted; the rest of what it gets
    from its master (signal, report and alive channels) are pipes.  (Matching
    /proc/net/tcp instead is as exact but slow: loopback load leaves tens of
    thousands of TIME_WAIT entries there.)
    """
    return len(_socket_inodes(pid) - _socket_inodes(master))


def wait_loaded(server: PreforkProcess, connections: int = CONNECTIONS,
                timeout: float = 15.0) -> None:
    """Until the workers hold all of wrk's connections: the load is on."""
    wait_until(lambda: sum(held_connections(p, server.pid) for p in server.live_workers())
               >= connections, timeout, f"the workers hold {connections} connections")


def await_replacement(server: PreforkProcess, before: Set[int], since: float,
                      timeout: float = 10.0) -> Tuple[Set[int], float, float]:
    """Workers forked after ``since`` (not in ``before``), once each is ready:
    (their PIDs, when the first was forked, when the last was ready), since ``since``."""
    deadline = since + timeout
    while True:
        new = server.worker_pids() - before
        if new:
            break
        assert time.monotonic() < deadline, f"no replacement within {timeout} s:\n" \
            + server.log()[-3000:]
        time.sleep(POLL)
    forked = time.monotonic() - since
    server.seen_pids.update(new)
    for pid in new:
        ready = re.compile(rf"\[{pid}\] \[INFO\] worker ready")
        while not ready.search(server.log()):
            assert time.monotonic() < deadline, f"worker {pid} never ready:\n" \
                + server.log()[-3000:]
            time.sleep(POLL)
    return new, forked, time.monotonic() - since


def ms(value: float) -> int:
    return round(value * 1000)


def status(control: Path) -> dict:
    reply = control_request(str(control), {"cmd": "status"})
    assert reply["ok"], reply
    return reply


def requests_by_pid(control: Path) -> Dict[int, int]:
    return {w["pid"]: w["requests"] for w in status(control)["workers"]}


# -- 1. a random worker SIGKILLed every second ---------------------------------

KILL_RUN = seconds(6, 30)


@pytest.mark.timeout(KILL_RUN + 60)
def test_random_worker_killed_every_second_loses_at_most_its_connections(
        prefork_server, figures, stalls):
    need_wrk()
    workers = 3
    server = prefork_server("serve", APP, "-b", "127.0.0.1:0", "-w", str(workers),
                            "-k", "sync")
    server.wait_ready()
    address = server.address
    server.wait_workers(lambda p: len(p) == workers)
    wrk = start_wrk(address, KILL_RUN, path="/ok")
    started = time.monotonic()
    kills: List[dict] = []
    try:
        wait_loaded(server)
        # Leave the last second to wrk alone: a kill after wrk stopped counts nothing.
        next_kill = time.monotonic()
        while next_kill < started + KILL_RUN - 1.5:
            time.sleep(max(0.0, next_kill - time.monotonic()))   # pacing, not synchronisation
            next_kill += 1.0
            before = server.live_workers()
            assert len(before) == workers, (before, server.log()[-3000:])
            victim = random.choice(sorted(before))
            # Stopped, it accepts nothing more: what it holds now is what the kill cuts.
            os.kill(victim, signal.SIGSTOP)
            held = held_connections(victim, server.pid)
            os.kill(victim, signal.SIGKILL)
            killed_at = time.monotonic()
            new, forked, ready = await_replacement(server, before, killed_at)
            assert len(new) == 1, f"{sorted(new)} replaced one worker:\n" + server.log()[-5000:]
            (pid,) = new
            kills.append({"victim": victim, "held": held, "replacement": pid,
                          "forked_ms": ms(forked), "ready_ms": ms(ready)})
    finally:
        result = finish_wrk(wrk, timeout=KILL_RUN + 30)
    bound = sum(k["held"] for k in kills)
    failed = result.socket_errors + result.non_2xx
    slowest = max(k["ready_ms"] for k in kills)
    figures(scenario="random worker SIGKILL every second, 3 sync workers, wrk -c64",
            kills=len(kills), **result.counts(), failed=failed, bound=bound,
            max_fork_ms=max(k["forked_ms"] for k in kills), max_replacement_ms=slowest,
            max_stall_ms=stalls.worst_ms)
    assert len(kills) >= KILL_RUN - 3, kills
    # The victims died, and no other worker did.
    log = server.log()
    died = re.findall(r"worker (\d+) \(gen 1\) (?:was killed|exited|timed out)", log)
    assert sorted(map(int, died)) == sorted(k["victim"] for k in kills), log[-5000:]
    assert result.non_2xx == 0, result
    assert failed <= bound, (result, kills, log[-5000:])
    if slowest > 1000:
        stalls.excuse(slowest - 1000, f"a replacement took {slowest} ms")
    assert slowest <= 1000, (kills, f"the machine stalled up to {stalls.worst_ms} ms")
    # The load went on between the kills (about 20k requests/s on this machine).
    assert result.requests > 1000 * len(kills), result
    assert "timed out" not in log and "boot failure" not in log


# -- 2. the master SIGKILLed ----------------------------------------------------

MASTER_ROUNDS = int(seconds(1, 5))


@pytest.mark.timeout(60 + 20 * MASTER_ROUNDS)
def test_killed_master_workers_exit_within_a_second_and_a_restart_binds_at_once(
        tmp_path, figures, stalls):
    """Each round: load, KILL the master, time its workers' exit, restart on the same port.

    The load is wrk's 64 busy connections plus a few idle keep-alive clients
    (one request each, then nothing), as browsers and proxies keep them.  The
    restarted master is the next round's victim; wrk runs through all of them
    (its connections fail while nobody listens; that is not counted).
    """
    need_wrk()
    workers, idle = 3, 8
    port = free_port()
    address = ("127.0.0.1", port)
    started: List[PreforkProcess] = []
    clients: List[Conn] = []

    def start(n: int) -> PreforkProcess:
        workdir = tmp_path / f"master{n}"
        workdir.mkdir()
        proc = PreforkProcess(["serve", APP, "-b", f"127.0.0.1:{port}", "-w", str(workers),
                               "-k", "sync"], workdir)
        started.append(proc)
        return proc

    exits: List[int] = []
    binds: List[int] = []
    readies: List[int] = []
    try:
        server = start(0)
        server.wait_ready()
        wrk = start_wrk(address, 10 * MASTER_ROUNDS + 10, path="/ok")
        try:
            for n in range(1, MASTER_ROUNDS + 1):
                pool = server.wait_workers(lambda p: len(p) == workers)
                for _ in range(idle):
                    clients.append(Conn(address))
                    assert clients[-1].request("GET", "/ok").status == 200
                wait_loaded(server, CONNECTIONS + idle)
                os.kill(server.pid, signal.SIGKILL)
                killed_at = time.monotonic()
                while any(pid_alive(p) for p in pool):
                    assert time.monotonic() - killed_at < 10, \
                        f"orphans {[p for p in pool if pid_alive(p)]} still alive"
                    time.sleep(POLL)
                exits.append(ms(time.monotonic() - killed_at))
                server.wait_exit()
                assert all(client.at_eof() for client in clients[-idle:])
                # At once: no waiting for the port, and the first try binds.
                restarted_at = time.monotonic()
                server = start(n)
                server.wait_for(rf"listening at 127\.0\.0\.1:{port}\b")
                binds.append(ms(time.monotonic() - restarted_at))
                server.wait_ready()
                readies.append(ms(time.monotonic() - restarted_at))
                resp = get(address, "/ok")
                assert resp.status == 200 and resp.body == b"ok\n"
            # The last master takes the whole load again, not only the one request above.
            wait_loaded(server)
        finally:
            wrk.terminate()
            wrk.wait(10)
    finally:
        for client in clients:
            client.close()
        for proc in started:
            proc.cleanup()
    figures(scenario=f"master SIGKILL under wrk -c64 + {idle} idle keep-alive clients, "
                     f"{workers} sync workers, restart on the same port",
            rounds=MASTER_ROUNDS, max_workers_gone_ms=max(exits),
            max_restart_bound_ms=max(binds), max_restart_ready_ms=max(readies),
            max_stall_ms=stalls.worst_ms)
    if max(exits) > 1000:
        stalls.excuse(max(exits) - 1000, f"orphans took {max(exits)} ms to exit")
    assert max(exits) <= 1000, (exits, f"the machine stalled up to {stalls.worst_ms} ms")


# -- 3. a handler that leaks memory ---------------------------------------------

LEAK_RUN = seconds(5, 25)
MAX_RSS = 96        # MiB
LEAK_STEP = 8       # MiB per request: over max_rss after ~10 requests


@pytest.mark.timeout(LEAK_RUN + 60)
def test_leaking_handler_is_recycled_by_max_rss_and_no_request_fails(prefork_server, figures,
                                                                    stalls):
    need_wrk()
    workers = 3
    server = prefork_server("serve", APP, "-b", "127.0.0.1:0", "-w", str(workers),
                            "-k", "sync", "--max-rss", str(MAX_RSS))
    server.wait_ready()
    address = server.address
    baseline = get(address, "/leak?mib=0").json()["rss"]
    assert baseline < (MAX_RSS // 2) << 20, f"a worker starts at {baseline >> 20} MiB"
    wrk = start_wrk(address, LEAK_RUN, path="/ok")
    started = time.monotonic()
    leaked, leak_failures, answered_by = 0, [], []
    try:
        wait_loaded(server)
        # One keep-alive client leaks into whichever worker holds it, paced at
        # LEAK_STEP / 0.05 s; after a recycle's Connection: close it goes on
        # with a new connection, so it leaks into the next worker.
        conn = Conn(address)
        try:
            while time.monotonic() < started + LEAK_RUN - 1.5:
                try:
                    resp = conn.request("GET", f"/leak?mib={LEAK_STEP}")
                except (OSError, AssertionError) as exc:
                    leak_failures.append(repr(exc))
                    conn.close()
                    conn = Conn(address)
                    continue
                leaked += 1
                if resp.status != 200:
                    leak_failures.append(resp.status)
                else:
                    answered_by.append(resp.json()["pid"])
                if (resp.header("Connection") or "").lower() == "close":
                    conn.close()
                    conn = Conn(address)
                time.sleep(0.05)     # pacing: the leak's rate
        finally:
            conn.close()
    finally:
        result = finish_wrk(wrk, timeout=LEAK_RUN + 30)
    log = server.log()
    recycled = [int(m.group(1)) for m in re.finditer(
        rf"worker (\d+) \(gen 1\) uses ([\d.]+) MiB, over max_rss \({MAX_RSS} MiB\)", log)]
    peak = max((float(m) for m in re.findall(r"uses ([\d.]+) MiB, over max_rss", log)),
               default=0.0)
    figures(scenario=f"leaking route ({LEAK_STEP} MiB/request, 20/s), max_rss {MAX_RSS}, "
                     "3 sync workers, wrk -c64 on /ok",
            **result.counts(), failed=result.socket_errors + result.non_2xx,
            recycled=len(recycled), leak_requests=leaked, leak_failed=len(leak_failures),
            peak_rss_mib=peak, max_stall_ms=stalls.worst_ms)
    assert len(recycled) >= 2, log[-3000:]
    # Recycled, not killed: each bloated worker finished its requests and left.
    assert "unexpectedly" not in log and "did not stop" not in log, log[-5000:]
    assert "timed out" not in log, log[-5000:]
    assert result.socket_errors == 0 and result.non_2xx == 0, result
    assert leak_failures == [], leak_failures
    # Only the workers the leak went to were recycled, and each has gone.
    assert set(recycled) <= set(answered_by), (recycled, set(answered_by))
    wait_until(lambda: not any(pid_alive(p) for p in recycled), 10, "recycled workers exit")


# -- 3. a handler that loops forever --------------------------------------------

LOOP_RUN = seconds(6, 25)
LOOP_LIMIT = 2      # seconds: timeout, or request_timeout
LOOP_EVERY = 7.0    # seconds between two looping requests in the long form
PROBES = 20         # new connections opened while a worker is stuck
ABORTED = {
    "timeout": (("--timeout", str(LOOP_LIMIT)),
                r"timed out \(no heartbeat for [\d.]+ s\)"),
    "request_timeout": (("--request-timeout", str(LOOP_LIMIT)),
                        rf'exceeded request_timeout \({LOOP_LIMIT}\.0 s\): "GET /loop HTTP/1\.1" '
                        r"from 127\.0\.0\.1:{port} running for [\d.]+ s"),
}


@pytest.mark.timeout(LOOP_RUN + 60)
@pytest.mark.parametrize("limit", sorted(ABORTED))
def test_looping_handler_is_killed_and_only_its_connections_fail(
        prefork_server, tmp_path, figures, stalls, limit):
    """A request that never ends takes its sync worker with it, and the keep-alive
    connections that worker holds; everything else is served throughout."""
    need_wrk()
    workers = 3
    control = tmp_path / "c.sock"
    flags, verdict = ABORTED[limit]
    server = prefork_server("serve", APP, "-b", "127.0.0.1:0", "-w", str(workers),
                            "-k", "sync", *flags, "--control-socket", str(control))
    server.wait_ready()
    address = server.address
    server.wait_workers(lambda p: len(p) == workers)
    wrk = start_wrk(address, LOOP_RUN, path="/ok")
    started = time.monotonic()
    faults: List[dict] = []
    try:
        wait_loaded(server)
        # A loop takes ~LOOP_LIMIT + 1 s (the master's tick) to be noticed;
        # leave wrk a second after the last replacement.
        while True:
            if faults:
                # No sleeping towards a next loop that would not fit (the quick form has one).
                if faults[-1]["at"] + LOOP_EVERY > started + LOOP_RUN - (LOOP_LIMIT + 3):
                    break
                time.sleep(max(0.0, faults[-1]["at"] + LOOP_EVERY - time.monotonic()))  # pacing
            before = server.live_workers()
            at = time.monotonic()
            with Conn(address, timeout=30) as looping:
                looping.send(b"GET /loop HTTP/1.1\r\nHost: x\r\n\r\n")
                (m,) = server.wait_for(r"loop: start (\d+)", count=len(faults) + 1)[-1:]
                stuck = int(m.group(1))
                # Stuck in the loop it accepts nothing more: this set can only shrink.
                held = held_connections(stuck, server.pid)
                served = requests_by_pid(control)
                # New clients are served meanwhile, by the other workers.
                for _ in range(PROBES):
                    resp = get(address, "/leak?mib=0")
                    assert resp.status == 200 and resp.json()["pid"] != stuck
                aborted = server.wait_for(
                    rf"worker {stuck} \(gen 1\) " + verdict.format(port=looping.port)
                    + "; dumping its traceback, then killing it", timeout=LOOP_LIMIT + 8)
                assert len(aborted) == 1
                # So were wrk's connections on the other workers, if it had any there.
                during = requests_by_pid(control)
                others = sum(during.get(p, 0) - n for p, n in served.items() if p != stuck)
                server.wait_for(rf"worker {stuck} \(gen 1\) was killed by SIGABRT after its "
                                f"{limit}; replacing it", timeout=10)
                stuck_for = time.monotonic() - at
                assert looping.at_eof(), "the looping request's client was left hanging"
            # faulthandler's dump names the frame it was stuck in.
            server.wait_for(r'File ".*fault_apps\.py", line \d+ in loop', count=len(faults) + 1)
            new, _, _ = await_replacement(server, before, at, timeout=LOOP_LIMIT + 10)
            faults.append({"at": at, "stuck": stuck, "held": held, "others_served": others,
                           "stuck_ms": ms(stuck_for), "replacements": sorted(new)})
    finally:
        result = finish_wrk(wrk, timeout=LOOP_RUN + 30)
    # The looping request's own connection is not one of wrk's.
    bound = sum(f["held"] - 1 for f in faults)
    failed = result.socket_errors + result.non_2xx
    figures(scenario=f"looping route, {limit} {LOOP_LIMIT} s, 3 sync workers, wrk -c64 on /ok",
            loops=len(faults), **result.counts(), failed=failed, bound=bound,
            max_stuck_ms=max(f["stuck_ms"] for f in faults),
            min_others_served=min(f["others_served"] for f in faults),
            max_stall_ms=stalls.worst_ms)
    assert faults and all(f["held"] >= 1 for f in faults), faults
    # No other worker died: only the looping ones were aborted.
    log = server.log()
    aborts = len(re.findall("dumping its traceback", log))
    if aborts > len(faults) and limit == "timeout":
        # A worker waiting in select beats once a second (the loop's tick).
        stalls.excuse(ms(LOOP_LIMIT - 1.0), f"{aborts - len(faults)} healthy worker(s) missed "
                      f"their {LOOP_LIMIT} s timeout")
    assert aborts == len(faults), (f"the machine stalled up to {stalls.worst_ms} ms",
                                   log[-5000:])
    assert "unexpectedly" not in log, log[-5000:]
    assert result.non_2xx == 0, result
    assert failed <= bound, (result, faults, log[-5000:])
    assert all(f["others_served"] >= PROBES for f in faults), faults


# -- regression: an orphan does not wait for idle keep-alive clients -------------

@pytest.mark.timeout(60)
@pytest.mark.parametrize("app,kind", [(APP, "sync"), (APP, "thread"),
                                      ("testapps:PidHandler", "thread")])
def test_orphaned_workers_do_not_wait_for_idle_keepalive_clients(prefork_server, stalls, app,
                                                                  kind):
    """Idle HTTP keep-alive clients held orphaned workers until their keep-alive deadline
    (5 s).  (A sync worker serving a handler class cannot notice its master is gone while
    the handler waits for an idle client: that one lasts up to idle_timeout.)"""
    server = prefork_server("serve", app, "-b", "127.0.0.1:0", "-w", "2", "-k", kind)
    server.wait_ready()
    pool = server.wait_workers(lambda p: len(p) == 2)
    clients = [Conn(server.address) for _ in range(4)]
    try:
        for client in clients:   # one request each, then idle on an open connection
            if app == APP:
                assert client.request("GET", "/ok").status == 200
            else:
                client.send(b"pid?\n")
                assert int(client.reader.readline()) in pool
        os.kill(server.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        while any(pid_alive(p) for p in pool):
            assert time.monotonic() - killed_at < 10, "orphans still alive"
            time.sleep(POLL)
        gone = time.monotonic() - killed_at
        if gone > 1.0:
            stalls.excuse(ms(gone - 1.0), f"orphaned workers lived {gone:.2f} s")
        assert gone <= 1.0, (f"orphaned workers lived {gone:.2f} s; the machine stalled up "
                             f"to {stalls.worst_ms} ms")
        assert all(client.at_eof() for client in clients)
    finally:
        for client in clients:
            client.close()
