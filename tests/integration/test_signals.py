"""The master's signal table, with real signals: TTIN/TTOU, TERM, INT/QUIT, USR1."""

import http.client
import signal
import socket
import threading
import time

import pytest

from harness import echo_once, pid_alive, refuses, wait_until

pytestmark = pytest.mark.integration

ECHO = "prefork.examples.echo:UpperEchoHandler"


def slow_request(address: tuple, seconds: float, result: dict) -> None:
    """Ask SlowHandler to sleep; store the answer (or the error) in ``result``."""
    try:
        with socket.create_connection(address, timeout=seconds + 30) as s:
            s.sendall(f"{seconds}\n".encode())
            s.shutdown(socket.SHUT_WR)
            chunks = []
            while True:
                data = s.recv(4096)
                if not data:
                    break
                chunks.append(data)
        result["answer"] = b"".join(chunks)
    except OSError as exc:
        result["error"] = exc
    result["finished"] = time.monotonic()


def start_slow_request(server, seconds: float) -> tuple:
    result: dict = {}
    thread = threading.Thread(target=slow_request, args=(server.address, seconds, result))
    thread.start()
    # SlowHandler logs before it sleeps: from here on the request is in flight.
    server.wait_for(r"slow: \d+ sleeping")
    return thread, result


@pytest.mark.timeout(60)
def test_ttin_ttou_change_pool_size_never_below_one(prefork_server):
    server = prefork_server("serve", ECHO, "-b", "127.0.0.1:0", "-w", "2")
    server.wait_ready()
    server.wait_workers(lambda p: len(p) == 2)

    server.signal(signal.SIGTTIN)
    server.wait_for(r"TTIN: pool size 3")
    grown = server.wait_workers(lambda p: len({x for x in p if pid_alive(x)}) == 3)
    server.wait_for(r"worker ready", count=3)

    for expected in (2, 1):
        server.signal(signal.SIGTTOU)
        server.wait_for(rf"TTOU: pool size {expected}")
        now = server.wait_workers(lambda p, n=expected: len({x for x in p if pid_alive(x)}) == n)
        assert now < grown   # shrinking retires workers; it does not replace them

    (last,) = server.live_workers()
    server.signal(signal.SIGTTOU)
    server.wait_for(r"TTOU: the pool is at its minimum of 1 worker")
    assert server.live_workers() == {last}
    assert echo_once(server.address, b"one\n") == b"ONE\n"

    # And it grows again from 1.
    server.signal(signal.SIGTTIN)
    server.wait_for(r"TTIN: pool size 2")
    server.wait_workers(lambda p: len({x for x in p if pid_alive(x)}) == 2)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["sync", "thread"])
def test_term_lets_inflight_request_finish_then_exits_0(prefork_server, kind):
    server = prefork_server("serve", "testapps:SlowHandler", "-b", "127.0.0.1:0",
                            "-w", "2", "-k", kind)
    server.wait_ready()
    address = server.address
    workers = server.wait_workers(lambda p: len(p) == 2)
    thread, result = start_slow_request(server, 2)
    sent = time.monotonic()
    server.signal(signal.SIGTERM)
    assert server.wait_exit(timeout=30) == 0
    thread.join(30)
    assert "error" not in result, result
    assert result["answer"].startswith(b"done "), result
    # The master waited for the request rather than cutting it short.
    assert result["finished"] - sent > 1.0
    server.wait_for(r"graceful stop")
    assert refuses(address)
    wait_until(lambda: not any(pid_alive(p) for p in workers), 5, "workers gone")


@pytest.mark.timeout(60)
def test_term_serves_connections_already_queued(prefork_server):
    # One sync worker, busy: the second client waits in the kernel's accept
    # queue when TERM comes, and is still served ("drain what the kernel queued").
    server = prefork_server("serve", "testapps:SlowHandler", "-b", "127.0.0.1:0",
                            "-w", "1", "-k", "sync")
    server.wait_ready()
    thread, busy = start_slow_request(server, 2)
    queued = socket.create_connection(server.address, timeout=30)   # handshake done: queued
    queued.sendall(b"0\n")
    server.signal(signal.SIGTERM)
    server.wait_for(r"graceful stop")
    answer = queued.makefile("rb").readline()
    queued.close()
    thread.join(30)
    assert busy.get("answer", b"").startswith(b"done "), busy
    assert answer.startswith(b"done "), answer
    assert server.wait_exit(timeout=30) == 0


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["sync", "thread"])
def test_term_kills_what_outlives_graceful_timeout(prefork_server, kind):
    server = prefork_server("serve", "testapps:SlowHandler", "-b", "127.0.0.1:0", "-w", "1",
                            "-k", kind, "--graceful-timeout", "1")
    server.wait_ready()
    thread, result = start_slow_request(server, 30)
    sent = time.monotonic()
    server.signal(signal.SIGTERM)
    assert server.wait_exit(timeout=20) == 0
    took = time.monotonic() - sent
    assert 0.9 < took < 6.0, f"stop took {took:.1f} s with graceful_timeout 1"
    if kind == "sync":
        # Stuck in the handler, the worker cannot enforce the deadline itself: the master
        # has faulthandler dump where it is stuck, then it is gone.
        server.wait_for(r"did not stop within graceful_timeout \(1.0 s\); dumping its "
                        r"traceback, then killing it")
        server.wait_for(r'File ".*testapps\.py", line \d+ in handle')
    else:   # the loop's thread is free to enforce graceful_timeout on its own
        server.wait_for(r"did not stop within graceful_timeout|graceful_timeout passed with "
                        r"1 connection")
    thread.join(10)
    assert not result.get("answer"), result


@pytest.mark.timeout(60)
def test_term_is_prompt_with_an_idle_keepalive_client(prefork_server):
    server = prefork_server("serve", "prefork.examples.hello:HelloHandler",
                            "-b", "127.0.0.1:0", "-w", "1")
    server.wait_ready()
    conn = http.client.HTTPConnection(*server.address, timeout=30)
    try:
        conn.request("GET", "/")
        assert conn.getresponse().read().startswith(b"Hello")
        # Nothing is in flight now: the client just keeps its connection open.
        server.signal(signal.SIGTERM)
        assert server.wait_exit(timeout=5) == 0
    finally:
        conn.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGQUIT])
def test_int_quit_stop_fast_and_exit_0(prefork_server, sig):
    server = prefork_server("serve", "testapps:SlowHandler", "-b", "127.0.0.1:0", "-w", "2")
    server.wait_ready()
    address = server.address
    workers = server.wait_workers(lambda p: len(p) == 2)
    # A request that would hold a graceful stop for 30 s must not hold a fast one.
    thread, result = start_slow_request(server, 30)
    sent = time.monotonic()
    server.signal(sig)
    assert server.wait_exit(timeout=20) == 0
    took = time.monotonic() - sent
    assert took < 5.0, f"fast stop took {took:.1f} s"
    server.wait_for(r"fast stop")
    thread.join(10)
    assert not result.get("answer"), result   # cut short, as a fast stop should
    assert refuses(address)
    wait_until(lambda: not any(pid_alive(p) for p in workers), 5, "workers gone")


@pytest.mark.timeout(60)
def test_usr1_reopens_the_error_log(prefork_server, tmp_path):
    error_log = tmp_path / "error.log"
    server = prefork_server("serve", ECHO, "-b", "127.0.0.1:0", "-w", "2",
                            "--error-log", str(error_log))
    server.follow(error_log)
    server.wait_ready()
    workers = server.wait_workers(lambda p: len(p) == 2)
    rotated = tmp_path / "error.log.1"
    error_log.rename(rotated)   # what logrotate does before telling the daemon

    server.signal(signal.SIGUSR1)
    wait_until(error_log.exists, 10, "a new error log at the original path")
    # Every worker says so, in the new file.
    matches = server.wait_for(r"\[(\d+)\] \[INFO\] reopened log files", count=2)
    assert {int(m.group(1)) for m in matches} == workers
    # The master writes there too now.
    server.signal(signal.SIGTTIN)
    server.wait_for(r"TTIN: pool size 3")
    old = rotated.read_text()
    assert "listening at" in old and "TTIN" not in old and "reopened" not in old
    assert "listening at" not in error_log.read_text()
