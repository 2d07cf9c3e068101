"""The master keeps the pool alive: respawn, stuck workers, recycling, orphaned workers."""

import os
import signal
import socket
import time

import pytest

from harness import echo_once, pid_alive, wait_until

pytestmark = pytest.mark.integration

ECHO = "prefork.examples.echo:UpperEchoHandler"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["sync", "thread"])
def test_killed_worker_is_replaced_within_a_second(prefork_server, kind):
    server = prefork_server("serve", "testapps:PidHandler", "-b", "127.0.0.1:0", "-w", "2",
                            "-k", kind)
    server.wait_ready()
    before = server.wait_workers(lambda p: len(p) == 2)
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    killed_at = time.monotonic()
    after = server.wait_workers(lambda p: victim not in p and len(p) == 2, timeout=10)
    took = time.monotonic() - killed_at
    assert took < 1.0, f"replacement appeared after {took:.2f} s"
    (replacement,) = after - before
    server.wait_for(rf"worker {victim} \(gen 1\) was killed by SIGKILL unexpectedly")
    server.wait_for(rf"\[{replacement}\] \[INFO\] worker ready")
    # The replacement serves: ask until it is the one that answers.
    deadline = time.monotonic() + 10
    seen = set()
    while replacement not in seen:
        assert time.monotonic() < deadline, f"only {seen} answered"
        seen.add(int(echo_once(server.address, b"pid?\n")))
    assert victim not in seen


@pytest.mark.timeout(60)
def test_workers_exit_when_master_is_killed(prefork_server):
    server = prefork_server("serve", ECHO, "-b", "127.0.0.1:0", "-w", "2")
    server.wait_ready()
    host, port = server.address
    workers = server.wait_workers(lambda p: len(p) == 2)
    assert echo_once((host, port)) == b"HELLO\n"
    os.kill(server.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    server.wait_exit()
    # Orphans notice (alive pipe EOF) and leave without being told.
    wait_until(lambda: not any(pid_alive(p) for p in workers), 5, "orphaned workers exit")
    took = time.monotonic() - killed_at
    assert took < 2.0, f"workers outlived their master by {took:.2f} s"
    # Nobody holds the listener any more: it can be bound and listened on again.
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
        s.listen(1)


@pytest.mark.timeout(60)
def test_stuck_sync_worker_dumps_traceback_and_is_replaced(prefork_server):
    server = prefork_server("serve", "testapps:SlowHandler", "-b", "127.0.0.1:0", "-w", "1",
                            "-k", "sync", "--timeout", "2")
    server.wait_ready()
    (stuck,) = server.wait_workers(lambda p: len(p) == 1)
    with socket.create_connection(server.address, timeout=30) as client:
        client.sendall(b"30\n")
        server.wait_for(rf"slow: {stuck} sleeping 30")
        server.wait_for(rf"worker {stuck} \(gen 1\) timed out \(no heartbeat", timeout=15)
        # faulthandler's dump names the frame the worker was stuck in.
        server.wait_for(r'File ".*testapps\.py", line \d+ in handle', timeout=10)
        server.wait_for(rf"worker {stuck} \(gen 1\) was killed by SIGABRT after its timeout")
        # The client is not left hanging for the rest of the 30 s.
        try:
            assert client.recv(100) == b""
        except ConnectionResetError:
            pass
    (replacement,) = server.wait_workers(lambda p: len(p) == 1 and stuck not in p)
    server.wait_for(rf"\[{replacement}\] \[INFO\] worker ready")
    with socket.create_connection(server.address, timeout=10) as client:
        client.sendall(b"0\n")
        assert client.makefile("rb").readline() == f"done {replacement}\n".encode()
    assert not pid_alive(stuck)


@pytest.mark.timeout(60)
def test_max_requests_recycles_without_failed_requests(prefork_server):
    server = prefork_server("serve", "testapps:PidHandler", "-b", "127.0.0.1:0", "-w", "1",
                            "-k", "sync", "--max-requests", "5")
    server.wait_ready()
    (first,) = server.wait_workers(lambda p: len(p) == 1)
    answered_by = []
    deadline = time.monotonic() + 30
    # Every request must succeed while workers are swapped underneath.
    while len(set(answered_by)) < 3:
        assert time.monotonic() < deadline, f"PIDs seen: {answered_by}"
        answered_by.append(int(echo_once(server.address, b"pid?\n")))
    assert answered_by[0] == first
    # A worker serves at least its 5; more while its successor boots (capacity first).
    counts = [answered_by.count(pid) for pid in dict.fromkeys(answered_by)][:-1]
    assert all(c >= 5 for c in counts), counts
    server.wait_for(rf"worker {first} \(gen 1\) reached max_requests")
    wait_until(lambda: not pid_alive(first), 10, "recycled worker exits")
    assert "unexpectedly" not in server.log()


@pytest.mark.timeout(60)
def test_crash_loop_backs_off_and_master_stays_up(prefork_server, tmp_path):
    module = tmp_path / "crashy.py"
    module.write_text("import os\nos._exit(1)\n")   # dies at boot, with no import error
    server = prefork_server("serve", "crashy:Handler", "-b", "127.0.0.1:0", "-w", "1")
    lines = server.wait_for(r"(\d+) boot failure\(s\) in a row, next try in ([\d.]+) s",
                            count=3, timeout=20)
    delays = [float(m.group(2)) for m in lines]
    assert delays == sorted(delays) and delays[-1] > delays[0], delays
    assert server.proc.poll() is None, "the master gave up on a crash loop"

    module.write_text("import socketserver\n\n\n"
                      "class Handler(socketserver.StreamRequestHandler):\n"
                      "    def handle(self):\n"
                      "        self.wfile.write(self.rfile.readline().upper())\n")
    server.wait_ready(timeout=40)   # the backoff is at most a few seconds by now
    assert echo_once(server.address, b"back\n") == b"BACK\n"
