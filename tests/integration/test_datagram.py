"""Datagram listeners (udp://, unix-dgram:) served by handler classes, over real sockets.

Replies carry the worker's PID (testapps.DatagramPidHandler), so a test sees
which worker answered.  UDP on loopback does not lose datagrams here, but a
client must still not hang forever on one: every read has a timeout, and
the reload test's client retries a request whose reply does not come (what
any UDP client does), then checks each request got its reply.
"""

import json
import re
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

from harness import echo_once, run_prefork

pytestmark = pytest.mark.integration

UDP_ECHO = "prefork.examples.echo:UDPEchoHandler"
PID = "testapps:DatagramPidHandler"
EITHER = "testapps:EitherKindHandler"


def udp_address(server) -> Tuple[str, int]:
    match = server.wait_for(r"listening at udp://([\d.]+):(\d+)")[0]
    return match.group(1), int(match.group(2))


def tcp_address(server) -> Tuple[str, int]:
    match = server.wait_for(r"listening at ([\d.]+):(\d+)")[0]
    return match.group(1), int(match.group(2))


def udp_client(timeout: float = 5.0) -> socket.socket:
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.bind(("127.0.0.1", 0))
    client.settimeout(timeout)
    return client


def exchange(client: socket.socket, address, data: bytes) -> bytes:
    client.sendto(data, address)
    return client.recv(65536)


def pid_of(reply: bytes) -> int:
    return int(reply.split(b" ", 1)[0])


def status(server, control: Path) -> dict:
    result = run_prefork(["status", "--json", "--control-socket", str(control)], server.workdir)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.timeout(40)
def test_two_sync_workers_both_serve_one_udp_socket(prefork_server, tmp_path):
    control = tmp_path / "control.sock"
    server = prefork_server("serve", PID, "-b", "udp://127.0.0.1:0", "-w", "2", "-k", "sync",
                            "--control-socket", str(control))
    server.wait_ready()
    address = udp_address(server)
    workers = server.wait_workers(lambda p: len(p) == 2)
    with udp_client() as client:
        # All sent at once: while one sync worker sleeps in a handler, only
        # the other can read the next datagram.
        for i in range(12):
            client.sendto(b"sleep 0.05 %d" % i, address)
        replies = [client.recv(100) for _ in range(12)]
    assert sorted(int(r.split()[-1]) for r in replies) == list(range(12))
    assert {pid_of(r) for r in replies} == workers
    # Each datagram is one request in the scoreboard, counted on the worker that read it.
    report = status(server, control)
    counts = {w["pid"]: w["requests"] for w in report["workers"]}
    assert counts == {pid: sum(pid_of(r) == pid for r in replies) for pid in workers}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", ["sync", "thread"])
def test_udp_echo_example(prefork_server, kind):
    server = prefork_server("serve", UDP_ECHO, "-b", "udp://127.0.0.1:0", "-w", "2", "-k", kind)
    server.wait_ready()
    address = udp_address(server)
    with udp_client() as client:
        for word in (b"hello\n", b"two\nlines\n", b""):
            assert exchange(client, address, word) == word.upper()


@pytest.mark.timeout(30)
def test_a_thread_worker_runs_datagrams_on_its_threads(prefork_server):
    server = prefork_server("serve", PID, "-b", "udp://127.0.0.1:0", "-w", "1", "-k", "thread",
                            "--threads", "4")
    server.wait_for(r"worker ready \(gen 1, 4 threads, handler class\)")
    address = udp_address(server)
    with udp_client() as client:
        started = time.monotonic()
        for i in range(8):
            client.sendto(b"sleep 0.3 %d" % i, address)
        replies = [client.recv(100) for _ in range(8)]
        elapsed = time.monotonic() - started
    assert sorted(int(r.split()[-1]) for r in replies) == list(range(8))
    assert len({pid_of(r) for r in replies}) == 1
    # One at a time would take 2.4 s; four threads take two rounds of 0.3 s.
    assert elapsed < 1.8, elapsed


@pytest.mark.timeout(30)
def test_unix_dgram_echo(prefork_server, tmp_path):
    path = tmp_path / "echo.sock"
    server = prefork_server("serve", UDP_ECHO, "-b", f"unix-dgram:{path}", "-w", "2")
    server.wait_ready()
    server.wait_for(rf"listening at unix-dgram:{re.escape(str(path))}")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as client:
        # The reply goes to the sender's address: an unbound client has none.
        client.bind(str(tmp_path / "client.sock"))
        client.settimeout(5)
        for word in (b"unix\n", b"datagram"):
            assert exchange(client, str(path), word) == word.upper()


@pytest.mark.timeout(30)
def test_max_packet_size_cuts_long_datagrams(prefork_server):
    server = prefork_server("serve", UDP_ECHO, "-b", "udp://127.0.0.1:0", "-w", "1",
                            "--max-packet-size", "16")
    server.wait_ready()
    address = udp_address(server)
    with udp_client() as client:
        assert exchange(client, address, b"a" * 100) == b"A" * 16
        assert exchange(client, address, b"short") == b"SHORT"


@pytest.mark.timeout(30)
def test_a_handler_error_is_logged_and_the_worker_goes_on(prefork_server):
    server = prefork_server("serve", PID, "-b", "udp://127.0.0.1:0", "-w", "1", "-k", "sync")
    server.wait_ready()
    address = udp_address(server)
    with udp_client() as client:
        # As under UDPServer, finish() still sends what handle() wrote: nothing.
        assert exchange(client, address, b"boom") == b""
        server.wait_for(r"error in DatagramPidHandler while serving a datagram from 127\.0\.0\.1:")
        assert exchange(client, address, b"after").endswith(b" after")
    assert "boom from DatagramPidHandler" in server.log()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", ["sync", "thread"])
def test_one_handler_class_serves_tcp_and_udp_in_one_master(prefork_server, kind):
    server = prefork_server("serve", EITHER, "-b", "127.0.0.1:0", "-b", "udp://127.0.0.1:0",
                            "-w", "2", "-k", kind)
    server.wait_ready()
    workers = server.wait_workers(lambda p: len(p) == 2)
    stream = echo_once(tcp_address(server), b"over tcp\n")
    with udp_client() as client:
        datagram = exchange(client, udp_address(server), b"over udp")
    kind_s, pid_s, text_s = stream.split(b" ", 2)
    assert kind_s == b"stream" and text_s == b"OVER TCP\n" and int(pid_s) in workers
    kind_d, pid_d, text_d = datagram.split(b" ", 2)
    assert kind_d == b"datagram" and text_d == b"OVER UDP" and int(pid_d) in workers


class RetryingClient:
    """Sends numbered requests one at a time; a reply late by ``patience`` means send again.

    A reply to an earlier try may still arrive after the retry: replies are
    matched by number, and stale ones are skipped.
    """

    def __init__(self, address, patience: float = 1.0) -> None:
        self.address = address
        self.sock = udp_client(patience)
        self.retries = 0
        self.answered: Dict[int, int] = {}      # request number -> PID that answered

    def request(self, number: int, tries: int = 10) -> None:
        data = b"req %d" % number
        for _ in range(tries):
            self.sock.sendto(data, self.address)
            try:
                while True:
                    reply = self.sock.recv(100)
                    if reply.endswith(b" " + data):
                        self.answered[number] = pid_of(reply)
                        return
            except socket.timeout:
                self.retries += 1
        raise AssertionError(f"no reply to request {number} after {tries} tries")


@pytest.mark.timeout(90)
@pytest.mark.parametrize("kind", ["sync", "thread"])
def test_hup_reloads_keep_udp_answering(prefork_server, kind):
    # With thread workers, retiring handlers still reply through the shared
    # socket after their loop stopped reading from it.
    server = prefork_server("serve", PID, "-b", "udp://127.0.0.1:0", "-w", "2", "-k", kind)
    server.wait_ready()
    client = RetryingClient(udp_address(server))
    reloads = 3
    errors: List[BaseException] = []

    def reload_repeatedly() -> None:
        try:
            for n in range(1, reloads + 1):
                server.signal(signal.SIGHUP)
                server.wait_for(r"reload complete", count=n, timeout=30)
        except BaseException as exc:   # reported by the main thread
            errors.append(exc)

    reloader = threading.Thread(target=reload_repeatedly)
    number = 0
    with client.sock:
        for number in range(20):
            client.request(number)
        reloader.start()
        while reloader.is_alive():
            number += 1
            client.request(number)
        reloader.join()
        for number in range(number + 1, number + 21):    # and the last generation serves
            client.request(number)
    assert not errors, errors
    assert sorted(client.answered) == list(range(number + 1))
    first = {client.answered[n] for n in range(20)}
    last = {client.answered[n] for n in range(number - 19, number + 1)}
    assert not first & last, client.answered     # the old workers are gone, new ones answer
    print(f"{number + 1} requests over {reloads} reloads, {client.retries} retries")
    assert "Traceback" not in server.log()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("target, bind, what", [
    ("wsgiapps:hello", "udp://127.0.0.1:0", "a WSGI application needs a stream socket"),
    ("prefork.examples.echo:UpperEchoHandler", "udp://127.0.0.1:0",
     "UpperEchoHandler is a socketserver.StreamRequestHandler"),
    (UDP_ECHO, "127.0.0.1:0", "UDPEchoHandler is a socketserver.DatagramRequestHandler"),
])
def test_a_target_that_cannot_serve_the_socket_kind_exits_3(prefork_server, tmp_path,
                                                             target, bind, what):
    # The master never imports the target: the worker finds the mismatch when
    # it loads it, and at the first start the master then stops with status 3.
    server = prefork_server("serve", target, "-b", bind, "-w", "2")
    assert server.wait_exit(timeout=20) == 3
    log = server.log()
    assert re.search(rf"\[ERROR\] target '{re.escape(target)}' cannot serve "
                     rf"(udp://)?127\.0\.0\.1:\d+: {re.escape(what)}", log), log
    # prefork check finds it before a deploy, naming the address as written.
    result = run_prefork(["check", target, "-b", bind], tmp_path)
    assert result.returncode == 3, (result.stdout, result.stderr)
    assert f"cannot serve {bind}: {what}" in result.stderr


@pytest.mark.timeout(60)
def test_a_reload_adding_a_datagram_address_the_target_cannot_serve_keeps_old_workers(
        prefork_server, tmp_path):
    config = tmp_path / "prefork.toml"
    config.write_text('bind = ["127.0.0.1:0"]\nworkers = 2\n')
    server = prefork_server("serve", "prefork.examples.echo:UpperEchoHandler", "-c", str(config))
    server.wait_ready()
    address = tcp_address(server)
    old = server.wait_workers(lambda p: len(p) == 2)
    config.write_text('bind = ["127.0.0.1:0", "udp://127.0.0.1:0"]\nworkers = 2\n')
    server.signal(signal.SIGHUP)
    server.wait_for(r"\[ERROR\] target '\S+:UpperEchoHandler' cannot serve udp://127\.0\.0\.1:")
    server.wait_for(r"reload failed: .*exited with status 3.*; generation 1 keeps serving")
    assert echo_once(address) == b"HELLO\n"
    assert old <= server.worker_pids()
