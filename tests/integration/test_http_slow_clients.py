"""Slow and idle clients must not hold a worker: request bodies and responses wait in
the worker's selector.  With one sync worker, another client is answered while a
slow client uploads, reads, or idles; thread workers run requests side by side.
"""

from __future__ import annotations

import hashlib
import resource
import socket
import threading
import time

import pytest

from http_helpers import Conn, build, get, serving, start, wsgiapps

pytestmark = pytest.mark.integration

SLOW_SECONDS = 2.0       # how long each slow client takes; others must be far quicker
FAST_ENOUGH = 1.0        # the worst latency allowed for the other client meanwhile
# A blocked worker would answer the other client about once per slow client.
MIN_ANSWERS = 5


@pytest.fixture(scope="module")
def sync1(tmp_path_factory):
    with serving(tmp_path_factory, "slow-sync", "router", "-w", "1", "-k", "sync") as served:
        yield served


def latencies_while(address, busy: threading.Event, limit: int = 200) -> list:
    """Time requests from a second client for as long as ``busy`` is set."""
    times = []
    with Conn(address) as conn:
        while busy.is_set() and len(times) < limit:
            began = time.monotonic()
            assert conn.request("GET", "/other").status == 200
            times.append(time.monotonic() - began)
            time.sleep(0.02)     # pacing, so the slow client gets its share of turns
    return times


@pytest.mark.timeout(30)
def test_slow_upload_does_not_block_others(sync1):
    body = wsgiapps.pattern(100_000)
    pieces = [body[i:i + 10_000] for i in range(0, len(body), 10_000)]
    busy, result = threading.Event(), {}

    def upload():
        with Conn(sync1.address) as conn:
            conn.send(build("POST", "/upload", [("Content-Length", str(len(body)))]))
            busy.set()
            for piece in pieces:
                conn.send(piece)
                time.sleep(SLOW_SECONDS / len(pieces))
            busy.clear()
            result["resp"] = conn.response("POST")

    uploader = threading.Thread(target=upload)
    uploader.start()
    try:
        assert busy.wait(10)
        times = latencies_while(sync1.address, busy)
    finally:
        busy.clear()
        uploader.join(20)
    assert len(times) >= MIN_ANSWERS, times
    assert max(times) < FAST_ENOUGH, times
    assert result["resp"].json()["body"].encode("latin-1") == body


@pytest.mark.timeout(30)
def test_slow_reader_does_not_block_others(sync1):
    size = 32 << 20      # far beyond what the socket buffers of both sides can hold
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.settimeout(20)
    sock.connect(sync1.address)
    reader = sock.makefile("rb")
    try:
        sock.sendall(build("GET", f"/large/?size={size}"))
        assert reader.readline().startswith(b"HTTP/1.1 200")
        busy = threading.Event()
        busy.set()
        timer = threading.Timer(SLOW_SECONDS, busy.clear)   # the reader's pause
        timer.start()
        try:
            times = latencies_while(sync1.address, busy)
        finally:
            timer.cancel()
        while reader.readline() != b"\r\n":
            pass
        digest = hashlib.sha256()
        left = size
        while left:
            data = reader.read(min(left, 1 << 20))
            assert data, f"response cut short with {left} bytes left"
            digest.update(data)
            left -= len(data)
    finally:
        reader.close()
        sock.close()
    assert len(times) >= MIN_ANSWERS, times
    assert max(times) < FAST_ENOUGH, times
    assert digest.hexdigest() == hashlib.sha256(wsgiapps.pattern(size)).hexdigest()


@pytest.mark.timeout(60)
def test_a_thousand_idle_keepalive_connections(prefork_server, tmp_path):
    wanted = 1000 + 200   # our sockets, the reader files and pytest's own
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:     # the server inherits it: raise before starting it
        if hard != resource.RLIM_INFINITY and hard < wanted:
            pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {wanted}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    # worker_connections defaults to exactly 1000: the worker would stop accepting.
    served = start(prefork_server, tmp_path, "router", "-w", "1", "-k", "sync",
                   "--worker-connections", "1100", "--keepalive", "60")
    idle = []
    try:
        for _ in range(1000):
            idle.append(Conn(served.address))
            idle[-1].send(build("GET", "/idle"))
        for conn in idle:    # each has been served once, and now idles in the selector
            assert conn.response().status == 200
        began = time.monotonic()
        assert get(served.address, "/fresh").status == 200
        assert time.monotonic() - began < 2.0
        for conn in idle[::100]:     # still open, still served
            assert conn.request("GET", "/again").json()["remote_port"] == conn.port
    finally:
        for conn in idle:
            conn.close()
        if soft < wanted:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", ["sync", "thread"])
def test_both_worker_kinds_serve_the_echo_app(prefork_server, tmp_path, kind):
    served = start(prefork_server, tmp_path, "router", "-w", "1", "-k", kind)
    with Conn(served.address) as conn:
        info = conn.request("GET", "/k?x=1").json()
        assert info["query"] == "x=1" and info["multithread"] == (kind == "thread")
        assert conn.request("POST", "/k", body=b"z" * 70000).json()["body"] == "z" * 70000
        resp = conn.request("POST", "/k", [("Transfer-Encoding", "chunked")],
                            b"2\r\nok\r\n0\r\n\r\n")
        assert resp.json()["body"] == "ok"
        assert conn.request("GET", "/stream/?chunks=8&size=65536").body == \
            wsgiapps.pattern(8 * 65536)
    assert f"worker ready (gen 1, {'sync' if kind == 'sync' else '32 threads'}, WSGI)" \
        in served.log()


def two_slow_requests(served, seconds: float) -> tuple:
    """Two clients ask at once; (elapsed, start/end records by id)."""
    def ask(ident):
        assert get(served.address, f"/slow/?t={seconds}&id={ident}").status == 200

    clients = [threading.Thread(target=ask, args=(ident,)) for ident in ("a", "b")]
    began = time.monotonic()
    for client in clients:
        client.start()
    for client in clients:
        client.join(30)
    elapsed = time.monotonic() - began
    marks = {(r["id"], r["event"]): r for e in ("slow-start", "slow-end")
             for r in served.records(e)}
    return elapsed, marks


@pytest.mark.timeout(30)
def test_thread_worker_runs_two_slow_requests_at_once(prefork_server, tmp_path):
    served = start(prefork_server, tmp_path, "router", "-w", "1", "-k", "thread",
                   "--threads", "2")
    elapsed, marks = two_slow_requests(served, 1.0)
    assert elapsed < 1.9, elapsed    # one after the other: >= 2.0
    first, second = sorted("ab", key=lambda i: marks[(i, "slow-start")]["time"])
    assert marks[(second, "slow-start")]["time"] < marks[(first, "slow-end")]["time"]
    assert marks[("a", "slow-start")]["thread"] != marks[("b", "slow-start")]["thread"]


@pytest.mark.timeout(30)
def test_sync_worker_runs_them_one_after_the_other(prefork_server, tmp_path):
    served = start(prefork_server, tmp_path, "router", "-w", "1", "-k", "sync")
    elapsed, marks = two_slow_requests(served, 0.5)
    assert elapsed >= 1.0, elapsed
    first, second = sorted("ab", key=lambda i: marks[(i, "slow-start")]["time"])
    assert marks[(second, "slow-start")]["time"] >= marks[(first, "slow-end")]["time"]


@pytest.mark.timeout(60)
def test_new_connections_are_not_starved_by_busy_keepalive_ones(prefork_server, tmp_path):
    # Both threads stay busy with requests from established keep-alive clients;
    # a newcomer must still be accepted and answered in turn, not left in the
    # backlog until the threads happen to be free at the loop's check.
    served = start(prefork_server, tmp_path, "router", "-w", "1", "-k", "thread",
                   "--threads", "2")
    stop = threading.Event()

    def hammer():
        # 8 clients, 2 threads, 50 ms a request: the threads are never free.
        with Conn(served.address) as conn:
            while not stop.is_set():
                assert conn.request("GET", "/slow/?t=0.05").status == 200

    hammers = [threading.Thread(target=hammer) for _ in range(8)]
    for thread in hammers:
        thread.start()
    try:
        worst = 0.0
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            began = time.monotonic()
            with Conn(served.address) as conn:
                assert conn.request("GET", "/hello/").status == 200
            worst = max(worst, time.monotonic() - began)
    finally:
        stop.set()
        for thread in hammers:
            thread.join(10)
    assert worst < FAST_ENOUGH, f"a new connection waited {worst:.2f} s for its first answer"
