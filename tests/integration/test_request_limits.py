"""request_timeout and max_rss end to end: a stuck request is dumped and killed, a bloated
worker is recycled without a failed request, and request_timeout 0 never fires."""

from __future__ import annotations

import re
import socket
import threading
import time

import pytest

from harness import pid_alive, wait_until
from http_helpers import Conn, get, start

pytestmark = pytest.mark.integration


def slow_pid(address) -> int:
    """The PID of the worker that answers a request that does not sleep."""
    resp = get(address, "/slow?t=0")
    assert resp.status == 200
    return resp.json()["pid"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["sync", "thread"])
def test_a_request_past_request_timeout_is_dumped_named_and_its_worker_replaced(
        prefork_server, tmp_path, kind):
    served = start(prefork_server, tmp_path, "router", "-w", "1", "-k", kind,
                   "--request-timeout", "1", "--timeout", "30")
    server = served.proc
    stuck = slow_pid(served.address)
    with Conn(served.address, timeout=20) as conn:
        conn.send(b"GET /slow?t=30&id=stuck HTTP/1.1\r\nHost: x\r\n\r\n")
        server.wait_for(r"slow: start stuck")
        server.wait_for(rf'worker {stuck} \(gen 1\) exceeded request_timeout \(1\.0 s\): '
                        rf'"GET /slow\?t=30&id=stuck HTTP/1\.1" from 127\.0\.0\.1:{conn.port} '
                        r"running for [\d.]+ s; dumping its traceback, then killing it",
                        timeout=10)
        # faulthandler's dump (all threads) names the app frame the request was stuck in.
        server.wait_for(r'File ".*wsgiapps\.py", line \d+ in slow', timeout=10)
        server.wait_for(rf"worker {stuck} \(gen 1\) was killed by SIGABRT after its "
                        "request_timeout; replacing it")
        assert conn.at_eof(), "the stuck request's client was left hanging"
    server.wait_workers(lambda p: len(p) == 1 and stuck not in p)
    replacement = slow_pid(served.address)
    assert replacement != stuck and not pid_alive(stuck)
    log = server.log()
    assert "timed out (no heartbeat" not in log
    assert len(re.findall("exceeded request_timeout", log)) == 1


@pytest.mark.timeout(60)
def test_a_handler_waiting_for_its_client_is_not_timed(prefork_server):
    server = prefork_server("serve", "testapps:SlowHandler", "-b", "127.0.0.1:0", "-w", "1",
                            "-k", "thread", "--request-timeout", "1")
    server.wait_ready()
    (worker,) = server.wait_workers(lambda p: len(p) == 1)
    with socket.create_connection(server.address, timeout=20) as client:
        port = client.getsockname()[1]
        time.sleep(2.5)     # idle in the handler's readline: this is what must not count
        client.sendall(b"30\n")
        server.wait_for(rf"slow: {worker} sleeping 30")
        (line,) = server.wait_for(
            rf"worker {worker} \(gen 1\) exceeded request_timeout \(1\.0 s\): SlowHandler for "
            rf"127\.0\.0\.1:{port} running for ([\d.]+) s", timeout=10)
        assert float(line.group(1)) < 2.5, "the idle wait was counted"
        server.wait_for(r'File ".*testapps\.py", line \d+ in handle', timeout=10)
    server.wait_workers(lambda p: len(p) == 1 and worker not in p)


@pytest.mark.timeout(60)
def test_request_timeout_zero_never_fires(prefork_server, tmp_path):
    served = start(prefork_server, tmp_path, "router", "-w", "1", "-k", "sync")
    worker = slow_pid(served.address)
    resp = get(served.address, "/slow?t=2.5&id=long", timeout=20)
    assert resp.status == 200 and resp.json()["pid"] == worker
    assert "request_timeout" not in served.log()


# The same /slow?t= and /grow?mib=&hold= routes on each worker kind.
GROWERS = {"sync": "router", "asyncio": "asgiapps:grower"}


@pytest.mark.timeout(90)
@pytest.mark.parametrize("kind", sorted(GROWERS))
def test_a_worker_over_max_rss_is_recycled_without_a_failed_request(prefork_server, tmp_path,
                                                                    kind):
    served = start(prefork_server, tmp_path, GROWERS[kind], "-w", "1", "-k", kind,
                   "--max-rss", "60")
    server, address = served.proc, served.address
    first = slow_pid(address)
    baseline = get(address, "/grow?mib=0").json()["rss"]
    assert baseline < 40 << 20, f"a worker starts at {baseline >> 20} MiB: the test needs room"

    answers, failures = [], []
    stop = threading.Event()

    def new_connections() -> None:
        while not stop.is_set():
            try:
                resp = get(address, "/slow?t=0", timeout=10)
                answers.append(resp.json()["pid"] if resp.status == 200 else resp.status)
            except Exception as exc:    # noqa: BLE001 - any failure is the finding
                failures.append(repr(exc))

    def keep_alive() -> None:
        conn = Conn(address)
        while not stop.is_set():
            try:
                resp = conn.request("GET", "/slow?t=0")
                answers.append(resp.json()["pid"] if resp.status == 200 else resp.status)
                if (resp.header("Connection") or "").lower() == "close":
                    conn.close()
                    conn = Conn(address)
            except Exception as exc:    # noqa: BLE001
                failures.append(repr(exc))
                conn.close()
                conn = Conn(address)
        conn.close()

    clients = [threading.Thread(target=f) for f in (new_connections, keep_alive)]
    for t in clients:
        t.start()
    try:
        # The clients are served by the first worker before it grows (else, on a
        # sync worker, the growing request may come first and hold it until it goes).
        wait_until(lambda: first in answers, 10, "the first worker answers the clients")
        # The request that grew it is still running when the worker is retired: a
        # graceful recycling lets it finish.
        with Conn(address, timeout=20) as conn:
            conn.send(b"GET /grow?mib=64&hold=3 HTTP/1.1\r\nHost: x\r\n\r\n")
            sent = time.monotonic()
            server.wait_for(rf"worker {first} \(gen 1\) uses [\d.]+ MiB, over max_rss "
                            r"\(60 MiB\); starting its replacement", timeout=10)
            server.wait_for(r"worker ready", count=2)    # and then the old one is retired
            assert time.monotonic() - sent < 2.5, "the request was over before the retiring"
            grown = conn.response().json()
        assert grown["pid"] == first and grown["rss"] > 60 << 20
        wait_until(lambda: not pid_alive(first), 20, "the bloated worker exits")
        wait_until(lambda: any(p != first for p in answers[-5:]), 10, "the replacement answers")
    finally:
        stop.set()
        for t in clients:
            t.join(15)
    assert failures == []
    assert all(isinstance(a, int) for a in answers), [a for a in answers if not isinstance(a, int)]
    assert first in answers and len(set(answers)) == 2, set(answers)
    log = server.log()
    assert "unexpectedly" not in log and "over max_rss" in log
    assert len(re.findall("over max_rss", log)) == 1


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", sorted(GROWERS))
def test_max_rss_below_a_fresh_worker_is_turned_off_not_churned(prefork_server, tmp_path,
                                                                kind):
    served = start(prefork_server, tmp_path, GROWERS[kind], "-w", "2", "-k", kind,
                   "--max-rss", "1")
    server, address = served.proc, served.address
    server.wait_for(r"before serving any request, over max_rss \(1 MiB\): replacements would "
                    r"start as big, so max_rss is off until the next reload", timeout=10)
    pids = server.worker_pids()
    assert len(pids) == 2
    # Nothing to wait for: the point is that no recycling happens over the next ticks.
    end = time.monotonic() + 2.5
    answered = set()
    while time.monotonic() < end:
        resp = get(address, "/slow?t=0")
        assert resp.status == 200
        answered.add(resp.json()["pid"])
    log = server.log()
    assert "starting its replacement" not in log and "unexpectedly" not in log
    assert len(re.findall("max_rss is off", log)) == 1
    assert answered <= pids and server.worker_pids() == pids
