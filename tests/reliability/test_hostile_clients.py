"""Hostile clients (issue 7): a well-behaved client is still answered within 100 ms at p99.

Each scenario starts ``prefork serve hostile_apps:router -w 2 -k sync`` on
127.0.0.1 with its default limits, starts an attack, waits until the
workers hold the attack's connections (their socket fds, counted in /proc:
a readiness signal, not a sleep), then times a well-behaved client for a
few seconds: one request on a new connection, one on a kept-alive
connection, in turn, sequentially.  Each mode must see zero failures and
p99 < 100 ms, and the attack must have held on average at least half its
connections meanwhile.  header_timeout (10 s) cuts slowloris connections and
client_timeout (30 s) stalled readers: that is the defence, and an attack
whose connections are all gone is started again (another wave), as an
attacker would, so the long form measures under fire throughout.

Attacks: slowhttptest (Debian) -H (slowloris: headers trickling in), -B
(slow POST: a body trickling in), -X (slow read: a tiny receive window), a
pool of Python slow readers of 64 MiB responses (this file run as a script,
see :func:`slow_readers`), and all of them at once.

Figures per scenario: the attack's connections (held at the start, on
average and at the least while the client ran), the client's requests and
failures, p50/p99/max per mode, and per second of probing the CPU time of
the two workers and the time they and the client sat runnable without a
CPU (/proc/PID/schedstat).  On a shared machine a slow answer's time is
that wait, not work: the workers spend well under a millisecond of CPU on
each of the client's requests, attack or not.  So a scenario skips, rather
than measure the machine, when the client timed for a second before the
attack already has a p99 over 50 ms, or when the p99 under attack is over
100 ms while the workers and the client waited more than a quarter of the
time for a CPU and the workers used less than half a CPU (a server burning
CPU under attack still fails).

Slow readers and the kernel's TCP memory: over loopback (MSS 64 KiB) the
kernel grows the send buffer of a connection whose reader stalls to its
maximum (tcp_wmem, 4 MiB), so each slow reader pins ~4 MiB of kernel memory
whatever the server does, and a few hundred of them push the whole machine
into TCP memory pressure (tcp_mem), where every connection, the
well-behaved client's too, stalls for seconds.  Over a real network (MSS
~1460) the same attack pins ~100 KiB a connection.  So the Python readers
announce an Ethernet MSS (TCP_MAXSEG 1448), and slowhttptest -X, which
cannot, gets only as many connections as :func:`loopback_slow_read_budget`
allows.

Beyond these scenarios: an attack holding workers x worker_connections
connections (2000 here) stops the workers accepting, and a new client waits
in the backlog until header_timeout frees room; that is the documented
limit, not checked here.
"""

from __future__ import annotations

import errno
import math
import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, List, Optional, Sequence

import pytest

from conftest import seconds

pytestmark = pytest.mark.integration

P99_LIMIT = 0.100        # seconds: the promise
PROBE_TIMEOUT = 5.0      # a probe request slower than this is a failure, not a sample
PACE = 0.005             # seconds between two probe rounds: a client, not a load generator
PROBE_SECONDS = seconds(2.5, 25)
CALM_SECONDS = 1.0       # the client timed before the attack too: what the machine allows
CALM_LIMIT = P99_LIMIT / 2   # a calm p99 above this: too busy a machine to measure (skip)
STARVED = 0.25           # s/s the workers and the client waited for a CPU: a busy machine...
BUSY_WORKERS = 0.5       # ...unless the workers themselves ran this much (s/s): then it is them
MIN_SAMPLES = 20         # answers per mode, at the least, for a p99 to mean something
HELD_AT_LEAST = 0.5      # of the attack's connections, on average, while the probe runs
READY_WITHIN = 30.0      # seconds for an attack to establish its connections
BIG = 64 << 20           # response size for the slow readers: never finished
HELLO = b"hello\n"


def need_slowhttptest() -> str:
    path = shutil.which("slowhttptest")
    if not path:
        pytest.skip("slowhttptest is not installed (apt-get install slowhttptest); "
                    ".ci/run installs it")
    return path


# -- the server, and what it holds ---------------------------------------------


def raise_fd_limit(wanted: int) -> None:
    """The server, slowhttptest and the reader pool inherit it: raise before starting them."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {wanted}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


@pytest.fixture
def server(prefork_server):
    """``-w 2`` sync workers of hostile_apps:router, default limits."""
    soft_hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    raise_fd_limit(8192)
    try:
        proc = prefork_server("serve", "hostile_apps:router", "-b", "127.0.0.1:0",
                              "-w", "2", "-k", "sync")
        proc.wait_ready()
        proc.wait_workers(lambda pids: len(pids) == 2)
        yield proc
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, soft_hard)


def held_sockets(proc) -> int:
    """Sockets the workers hold open: their listeners, and every connection.

    Counted from their fds, not from /proc/net/tcp, which lists every
    TIME_WAIT socket on the machine (tens of thousands after a load test).
    """
    count = 0
    for pid in proc.worker_pids():
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"):
                    count += 1
            except OSError:
                continue
    return count


def loopback_slow_read_budget(wanted: int) -> int:
    """At most ``wanted`` loopback slow readers, each pinning a full send buffer,
    while all of them stay under 40% of the TCP memory pressure threshold (the
    machine may be doing other things with the rest)."""
    page = os.sysconf("SC_PAGE_SIZE")
    try:
        pressure = int(Path("/proc/sys/net/ipv4/tcp_mem").read_text().split()[1]) * page
        send_max = int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
    except (OSError, IndexError, ValueError):
        return wanted
    return max(1, min(wanted, int(0.4 * pressure / send_max)))


# -- attacks -------------------------------------------------------------------


class Attack:
    """One attacking command, started again (a new wave) when all its connections are gone.

    Every process is started here and ended here, by its PID (Popen).
    """

    def __init__(self, name: str, argv: Sequence[str], connections: int, workdir: Path) -> None:
        self.name, self.argv, self.connections = name, list(argv), connections
        self.workdir = workdir
        self.waves: List[subprocess.Popen] = []
        self.outputs: List[Path] = []

    def start(self) -> None:
        out = self.workdir / f"{self.name}-{len(self.waves) + 1}.out"
        self.outputs.append(out)
        with open(out, "wb") as f:
            self.waves.append(subprocess.Popen(self.argv, stdout=f, stderr=subprocess.STDOUT,
                                               stdin=subprocess.DEVNULL))

    def keep_up(self) -> None:
        if self.waves and self.waves[-1].poll() is not None:
            self.start()

    def running(self) -> bool:
        return bool(self.waves) and self.waves[-1].poll() is None

    def stop(self) -> None:
        for proc in self.waves:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.waves:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def output(self) -> str:
        """The last wave's output, terminal escapes removed."""
        if not self.outputs:
            return ""
        text = self.outputs[-1].read_text(errors="replace")
        return re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text)[-3000:]


def slowhttptest(mode: str, connections: int, url: str, *extra: str) -> List[str]:
    # -l: longer than any scenario (the test stops it); -r: the ramp, connections/s.
    return [need_slowhttptest(), mode, "-c", str(connections), "-r", "400", "-l", "600",
            "-p", "5", "-u", url, *extra]


def slowloris(address, n: int, workdir: Path) -> Attack:
    # Headers never end: a random "X-ab: cd" line every second on each connection.
    return Attack("slowloris", slowhttptest("-H", n, url(address, "/hello/"),
                                            "-i", "1", "-x", "2"), n, workdir)


def slow_post(address, n: int, workdir: Path) -> Attack:
    # Content-Length 1 MiB, a few bytes of it every second.
    return Attack("slow-post", slowhttptest("-B", n, url(address, "/hello/"),
                                            "-i", "1", "-x", "2", "-s", str(1 << 20)), n, workdir)


def slow_read(address, n: int, workdir: Path) -> Attack:
    # Three pipelined 4 MiB requests; a 1-512 byte window; 32 bytes read a second.
    n = loopback_slow_read_budget(n)
    return Attack("slow-read", slowhttptest("-X", n, url(address, f"/big/?size={4 << 20}"),
                                            "-k", "3", "-n", "1", "-z", "32",
                                            "-w", "1", "-y", "512"), n, workdir)


def reader_pool(address, n: int, workdir: Path) -> Attack:
    # 64 MiB each (never finished), 16 bytes read a second, an Ethernet MSS.
    return Attack("reader-pool", [sys.executable, __file__, "slow-readers", address[0],
                                  str(address[1]), str(n), str(BIG)], n, workdir)


def url(address, path: str) -> str:
    return f"http://{address[0]}:{address[1]}{path}"


# -- the well-behaved client ------------------------------------------------------


class Client:
    """One GET /hello/ at a time; each mode's latencies and failures."""

    def __init__(self, address) -> None:
        self.address = address
        self.times = {"fresh": [], "kept": []}
        self.failures: List[str] = []
        self.kept: Optional[socket.socket] = None
        self.kept_reader = None

    def _ask(self, sock, reader, close: bool) -> None:
        sock.sendall(b"GET /hello/ HTTP/1.1\r\nHost: probe\r\n"
                     + (b"Connection: close\r\n" if close else b"") + b"\r\n")
        status = reader.readline()
        length = None
        while True:
            line = reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        body = reader.read(length) if length is not None else b""
        if not status.startswith(b"HTTP/1.1 200 ") or body != HELLO:
            raise AssertionError(f"answered {status!r} {body!r}")

    def fresh(self) -> None:
        began = time.perf_counter()
        try:
            with socket.create_connection(self.address, timeout=PROBE_TIMEOUT) as sock:
                with sock.makefile("rb") as reader:
                    self._ask(sock, reader, close=True)
        except (OSError, AssertionError, ValueError) as exc:
            self.failures.append(f"fresh: {exc!r}")
            return
        self.times["fresh"].append(time.perf_counter() - began)

    def keep_alive(self) -> None:
        try:
            if self.kept is None:    # (re)connecting is not timed: this mode times requests
                self.kept = socket.create_connection(self.address, timeout=PROBE_TIMEOUT)
                self.kept_reader = self.kept.makefile("rb")
            began = time.perf_counter()
            self._ask(self.kept, self.kept_reader, close=False)
        except (OSError, AssertionError, ValueError) as exc:
            self.failures.append(f"keep-alive: {exc!r}")
            self.close()
            return
        self.times["kept"].append(time.perf_counter() - began)

    def close(self) -> None:
        if self.kept is not None:
            self.kept_reader.close()
            self.kept.close()
            self.kept = None


def schedstat(pids: List[int], field: int) -> float:
    """Seconds these processes have spent on a CPU (field 0) or runnable without one
    (field 1), from /proc/PID/schedstat.

    On a shared machine the second is where a slow answer's time goes: neither
    the worker nor the client did anything, they waited for a CPU.
    """
    total = 0
    for pid in pids:
        try:
            total += int(Path(f"/proc/{pid}/schedstat").read_text().split()[field])
        except (OSError, IndexError, ValueError):
            pass
    return total / 1e9


def percentile(values: List[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def ms(value: float) -> float:
    return round(value * 1e3, 2)


# -- a scenario ------------------------------------------------------------------


def under_fire(proc, attacks: List[Attack], figures: Callable[..., None]) -> None:
    """Start ``attacks``, wait until the workers hold their connections, time the client."""
    address = proc.address
    target = sum(a.connections for a in attacks)
    workers = sorted(proc.worker_pids())
    baseline = held_sockets(proc)     # the listeners
    calm = Client(address)       # the same client before the attack: what the machine allows
    end = time.monotonic() + CALM_SECONDS
    while time.monotonic() < end:
        calm.fresh()
        calm.keep_alive()
        time.sleep(PACE)
    calm.close()
    load = os.getloadavg()[0]
    assert not calm.failures, f"with no attack yet: {calm.failures[:10]}"
    calm_p99 = percentile(calm.times["fresh"] + calm.times["kept"], 99)
    if calm_p99 >= CALM_LIMIT:
        # Other processes hold the CPUs: what would be measured is the machine.
        figures(attack="+".join(a.name for a in attacks), skipped="machine too busy",
                calm_p99_ms=ms(calm_p99), loadavg=round(load, 1))
        pytest.skip(f"the machine is too busy to measure: with no attack yet the client's "
                    f"p99 is {ms(calm_p99)} ms, load average {load:.1f}")
    client = Client(address)
    samples: List[int] = []
    try:
        for attack in attacks:
            attack.start()
        deadline = time.monotonic() + READY_WITHIN
        held = 0
        while held < 0.95 * target:     # a few may fail to connect; most must not
            for attack in attacks:
                assert attack.running(), \
                    f"{attack.name} exited before its connections were up:\n{attack.output()}"
            assert time.monotonic() < deadline, \
                (f"the workers hold {held} of {target} attack connections after "
                 f"{READY_WITHIN} s:\n" + "\n".join(a.output() for a in attacks))
            time.sleep(0.1)
            held = held_sockets(proc) - baseline
        ready_held = held

        next_sample = 0.0
        watched = sorted(proc.worker_pids()) + [os.getpid()]
        waited, worked = schedstat(watched, 1), schedstat(workers, 0)
        began = time.monotonic()
        end = began + PROBE_SECONDS
        while time.monotonic() < end:
            client.fresh()
            client.keep_alive()
            now = time.monotonic()
            if now >= next_sample:     # between requests: not part of any latency
                next_sample = now + 0.5
                samples.append(held_sockets(proc) - baseline)
                for attack in attacks:
                    attack.keep_up()
            time.sleep(PACE)
        waited, worked = schedstat(watched, 1) - waited, schedstat(workers, 0) - worked
        probed = time.monotonic() - began
    finally:
        client.close()
        for attack in attacks:
            attack.stop()

    fresh, kept = client.times["fresh"], client.times["kept"]
    average_held = sum(samples) / len(samples)
    counts = {
        "attack": "+".join(a.name for a in attacks),
        "attack_connections": target, "held_at_start": ready_held,
        "held_avg": round(average_held), "held_min": min(samples),
        "waves": sum(len(a.waves) for a in attacks),
        "probe_requests": len(fresh) + len(kept) + len(client.failures),
        "failures": len(client.failures),
        "calm_p99_ms": ms(calm_p99),
        "loadavg": round(load, 1),
        # ms per second of probing: what the two workers did, and how long they
        # and the client waited for a CPU (> 0: other processes had it)
        "workers_cpu_ms_per_s": round(worked * 1e3 / probed, 1),
        "cpu_wait_ms_per_s": round(waited * 1e3 / probed, 1),
    }
    for mode, times in (("fresh", fresh), ("keepalive", kept)):
        if times:
            counts.update({f"{mode}_p50_ms": ms(percentile(times, 50)),
                           f"{mode}_p99_ms": ms(percentile(times, 99)),
                           f"{mode}_max_ms": ms(max(times))})
    slow = [mode for mode, times in (("fresh", fresh), ("keepalive", kept))
            if len(times) < MIN_SAMPLES or percentile(times, 99) >= P99_LIMIT]
    # Slow (or too slow to count), yet the workers hardly ran while they and the
    # client queued for a CPU: other processes had the machine, and this measured them.
    starved = waited > STARVED * probed and worked < BUSY_WORKERS * probed
    if slow and starved:
        counts["inconclusive"] = "machine too busy"
    figures(**counts)

    log = proc.log()
    assert "Traceback" not in log, log[-3000:]
    assert sorted(proc.worker_pids()) == workers, f"a worker was replaced:\n{log[-3000:]}"
    assert not client.failures, client.failures[:10]
    assert average_held >= HELD_AT_LEAST * target, \
        f"the attack faded: {samples} of {target}\n" + "\n".join(a.output() for a in attacks)
    if slow and starved:
        pytest.skip(f"inconclusive, the machine is too busy: p99 over 100 ms or under "
                    f"{MIN_SAMPLES} answers ({', '.join(slow)}) "
                    f"while the workers used {counts['workers_cpu_ms_per_s']} ms of CPU a second "
                    f"and waited, with the client, {counts['cpu_wait_ms_per_s']} ms a second "
                    f"for one: {counts}")
    assert len(fresh) >= MIN_SAMPLES and len(kept) >= MIN_SAMPLES, counts
    assert percentile(fresh, 99) < P99_LIMIT, counts
    assert percentile(kept, 99) < P99_LIMIT, counts


TIMEOUT = int(seconds(60, 120))


@pytest.mark.timeout(TIMEOUT)
def test_slowloris(server, figures, tmp_path):
    under_fire(server, [slowloris(server.address, 600, tmp_path)], figures)


@pytest.mark.timeout(TIMEOUT)
def test_slow_post_bodies(server, figures, tmp_path):
    under_fire(server, [slow_post(server.address, 400, tmp_path)], figures)


@pytest.mark.timeout(TIMEOUT)
def test_slow_read_slowhttptest(server, figures, tmp_path):
    under_fire(server, [slow_read(server.address, 300, tmp_path)], figures)


@pytest.mark.timeout(TIMEOUT)
def test_slow_readers_of_large_responses(server, figures, tmp_path):
    under_fire(server, [reader_pool(server.address, 600, tmp_path)], figures)


@pytest.mark.timeout(TIMEOUT)
def test_all_attacks_at_once(server, figures, tmp_path):
    address = server.address
    under_fire(server, [slowloris(address, 300, tmp_path), slow_post(address, 200, tmp_path),
                        slow_read(address, 150, tmp_path), reader_pool(address, 250, tmp_path)],
               figures)


def server_end(port: int, client_port: int) -> List[str]:
    """States (hex, as /proc/net/tcp has them) of the server's end of one connection."""
    states = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if (int(fields[1].rsplit(":", 1)[1], 16) == port
                and int(fields[2].rsplit(":", 1)[1], 16) == client_port):
            states.append(fields[3])
    return states


@pytest.mark.timeout(60)
def test_a_reader_cut_at_client_timeout_is_reset(prefork_server):
    """Regression: the cut used to be a plain close, which left the server's end
    orphaned in FIN_WAIT1 with the unsent response (here ~2.8 MiB) queued, for as
    long as the client kept its end open and its window shut: cutting slow readers
    freed no kernel memory, and a few hundred of them put the machine into TCP
    memory pressure.  Now the cut is a reset and the server's end is gone at once."""
    proc = prefork_server("serve", "hostile_apps:router", "-b", "127.0.0.1:0", "-w", "1",
                          "-k", "sync", "--client-timeout", "1")
    proc.wait_ready()
    port = proc.address[1]
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(10)
        sock.connect(proc.address)
        sock.sendall(f"GET /big/?size={BIG} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        assert sock.recv(12) == b"HTTP/1.1 200"
        client_port = sock.getsockname()[1]
        assert server_end(port, client_port) == ["01"]     # ESTABLISHED, the response waiting
        deadline = time.monotonic() + 15    # client_timeout 1 s, a sweep every 0.5 s
        while server_end(port, client_port):
            assert time.monotonic() < deadline, \
                f"the server's end is still there: {server_end(port, client_port)} (04: FIN_WAIT1)"
            time.sleep(0.1)
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == errno.ECONNRESET


# -- the slow reader pool (this file as a script) -----------------------------------


def slow_readers(host: str, port: int, n: int, size: int, chunk: int = 16,
                 interval: float = 1.0) -> None:
    """``n`` connections, each asking for ``size`` bytes and reading ``chunk`` a second.

    A tiny receive buffer keeps the window shut, so the response waits in
    the server.  A connection the server cuts (client_timeout) is opened
    again, as an attacker would.  Runs until killed; prints ``open N
    reopened R`` every second.
    """
    request = f"GET /big/?size={size} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()

    def open_one() -> socket.socket:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)     # before connect: the window
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 1448)   # an Ethernet MSS
        sock.settimeout(5)
        sock.connect((host, port))
        sock.sendall(request)
        sock.setblocking(False)
        return sock

    socks = [open_one() for _ in range(n)]
    reopened = 0
    while True:
        print(f"open {len(socks)} reopened {reopened}", flush=True)
        began = time.monotonic()
        for i, sock in enumerate(socks):
            try:
                data = sock.recv(chunk)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                sock.close()
                socks[i] = open_one()
                reopened += 1
        time.sleep(max(0.0, interval - (time.monotonic() - began)))


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "slow-readers":
        slow_readers(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
    else:
        sys.exit(f"usage: {sys.argv[0]} slow-readers HOST PORT N SIZE")
