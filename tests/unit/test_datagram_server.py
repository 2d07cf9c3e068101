"""DatagramServer and the serve loop's datagram reading, in-process, on real sockets.

No fork: one UDP (or unix-dgram) socket on loopback plays the master's
listener, a ServeLoop with a sync or thread dispatcher reads from it, and a
client socket in the test sends datagrams and reads the replies.
"""

import logging
import os
import socket
import socketserver
import threading
import time
from pathlib import Path

import pytest

from prefork.servers.datagram import DatagramServer
from prefork.scoreboard import Scoreboard
from prefork.worker.dispatch import SyncDispatcher, ThreadDispatcher
from prefork.worker.loop import ServeLoop


class Upper(socketserver.DatagramRequestHandler):
    def handle(self) -> None:
        self.wfile.write(self.rfile.read().upper())


class Recording(socketserver.BaseRequestHandler):
    seen: list = []

    def handle(self) -> None:
        Recording.seen.append((self.request, self.client_address, self.server))


class Boom(socketserver.DatagramRequestHandler):
    def handle(self) -> None:
        if self.rfile.read() == b"boom":
            raise RuntimeError("boom in a datagram handler")
        self.wfile.write(b"ok")


class Blocking(socketserver.DatagramRequestHandler):
    """Holds its thread until ``release`` is set, then echoes."""

    release = threading.Event()

    def handle(self) -> None:
        assert Blocking.release.wait(10)
        self.wfile.write(self.rfile.read())


class FakeSignals:
    """The loop only needs a readable fd and read()."""

    def __init__(self) -> None:
        self.r, self.w = os.pipe()

    def fileno(self) -> int:
        return self.r

    def read(self) -> list:
        return []

    def close(self) -> None:
        os.close(self.r)
        os.close(self.w)


@pytest.fixture
def udp():
    """(listener socket as the master binds it, client socket with a reply timeout)."""
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    server.setblocking(False)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.bind(("127.0.0.1", 0))
    client.settimeout(5)
    yield server, client
    server.close()
    client.close()


@pytest.fixture
def make_loop():
    made = []

    def make(server, dispatcher=None):
        board = Scoreboard(1)
        signals, (alive_r, alive_w) = FakeSignals(), os.pipe()
        loop = ServeLoop([server], dispatcher or SyncDispatcher(), board.slot(0), signals,
                         alive_r, 5.0, lambda sig: None, lambda: None, needs_thread=True)
        loop.open()
        made.append((loop, board, signals, alive_r, alive_w))
        return loop

    yield make
    for loop, board, signals, alive_r, alive_w in made:
        loop.selector.close()
        signals.close()
        os.close(alive_r)
        os.close(alive_w)
        board.close()


def wait_reaped(loop, timeout: float = 5.0) -> None:
    """Run the thread dispatcher's done callbacks until nothing is in flight."""
    deadline = time.monotonic() + timeout
    while not loop.dispatcher.idle():
        assert time.monotonic() < deadline, "jobs did not finish"
        loop.dispatcher.reap()
        time.sleep(0.005)


def test_a_datagram_request_handler_replies_to_the_sender(udp, make_loop):
    sock, client = udp
    server = DatagramServer(sock, Upper)
    loop = make_loop(server)
    client.sendto(b"hello", sock.getsockname())
    loop._accept(server)
    assert client.recvfrom(100) == (b"HELLO", sock.getsockname())
    assert loop.slot.requests == 1      # one datagram, one request
    assert server.socket.fileno() != -1   # the shared socket is not closed per request


def test_a_plain_handler_gets_data_and_socket_as_under_udpserver(udp, make_loop):
    sock, client = udp
    Recording.seen = []
    server = DatagramServer(sock, Recording)
    assert server.server_address == sock.getsockname() and server.socket_type == socket.SOCK_DGRAM
    loop = make_loop(server)
    client.sendto(b"abc", sock.getsockname())
    loop._accept(server)
    [(request, address, seen_server)] = Recording.seen
    assert request == (b"abc", sock) and address == client.getsockname()
    assert seen_server is server


def test_a_long_datagram_is_cut_to_max_packet_size(udp, make_loop):
    sock, client = udp
    server = DatagramServer(sock, Upper, max_packet_size=10)
    loop = make_loop(server)
    client.sendto(b"x" * 100, sock.getsockname())
    loop._accept(server)
    assert client.recv(200) == b"X" * 10


def test_an_empty_queue_is_not_an_error(udp, make_loop):
    sock, _ = udp
    server = DatagramServer(sock, Upper)
    loop = make_loop(server)
    with pytest.raises(BlockingIOError):
        server.get_request()
    loop._accept(server)    # the race lost to another worker looks the same
    assert loop.slot.requests == 0


def test_a_handler_error_is_logged_and_serving_goes_on(udp, make_loop, caplog):
    sock, client = udp
    server = DatagramServer(sock, Boom)
    loop = make_loop(server)
    with caplog.at_level(logging.ERROR, logger="prefork"):
        client.sendto(b"boom", sock.getsockname())
        loop._accept(server)
    assert "error in Boom while serving a datagram from 127.0.0.1:" in caplog.text
    assert "boom in a datagram handler" in caplog.text
    # As under UDPServer, finish() still sends what handle() wrote: nothing.
    assert client.recv(10) == b""
    client.sendto(b"again", sock.getsockname())
    loop._accept(server)
    assert client.recv(10) == b"ok"
    assert loop.slot.requests == 2


def test_a_thread_worker_reads_no_more_datagrams_than_it_has_free_threads(udp, make_loop):
    sock, client = udp
    Blocking.release.clear()
    server = DatagramServer(sock, Blocking)
    loop = make_loop(server, ThreadDispatcher(2))
    for i in range(5):
        client.sendto(b"%d" % i, sock.getsockname())
    loop._accept(server)
    assert loop.dispatcher.busy == 2 and not loop._listening
    Blocking.release.set()
    wait_reaped(loop)
    assert loop._listening      # room again: reading again
    loop._accept(server)
    wait_reaped(loop)
    loop._accept(server)
    wait_reaped(loop)
    assert sorted(client.recv(10) for _ in range(5)) == [b"0", b"1", b"2", b"3", b"4"]
    assert loop.slot.requests == 5


def test_graceful_stop_serves_what_is_queued_then_closes(udp, make_loop):
    sock, client = udp
    server = DatagramServer(sock, Upper)
    loop = make_loop(server)
    for word in (b"a", b"b", b"c"):
        client.sendto(word, sock.getsockname())
    loop.stop("test")
    assert sorted(client.recv(10) for _ in range(3)) == [b"A", b"B", b"C"]
    assert sock.fileno() == -1


def test_stop_keeps_the_socket_open_for_replies_still_running(udp, make_loop):
    sock, client = udp
    Blocking.release.clear()
    server = DatagramServer(sock, Blocking)
    loop = make_loop(server, ThreadDispatcher(2))
    client.sendto(b"late", sock.getsockname())
    loop._accept(server)
    loop.stop("test")
    assert sock.fileno() != -1      # the handler still has to send its reply
    Blocking.release.set()
    wait_reaped(loop)
    assert client.recv(10) == b"late"
    assert sock.fileno() == -1


def test_unix_datagram_reply_reaches_a_bound_client(tmp_path: Path, make_loop):
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock, \
            socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as client:
        sock.bind(str(tmp_path / "server.sock"))
        sock.setblocking(False)
        client.bind(str(tmp_path / "client.sock"))
        client.settimeout(5)
        server = DatagramServer(sock, Upper)
        loop = make_loop(server)
        client.sendto(b"unix", str(tmp_path / "server.sock"))
        loop._accept(server)
        assert client.recv(10) == b"UNIX"


def test_an_unbound_unix_client_is_named_in_the_error(tmp_path: Path, make_loop, caplog):
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock, \
            socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as client:
        sock.bind(str(tmp_path / "server.sock"))
        sock.setblocking(False)
        server = DatagramServer(sock, Boom)
        loop = make_loop(server)
        with caplog.at_level(logging.ERROR, logger="prefork"):
            client.sendto(b"boom", str(tmp_path / "server.sock"))
            loop._accept(server)
        assert "from an unbound client" in caplog.text


def test_serve_forever_is_refused(udp):
    with pytest.raises(RuntimeError, match="prefork runs the serve loop"):
        DatagramServer(udp[0], Upper).serve_forever()
