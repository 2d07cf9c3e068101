"""The selector adapter (HttpConnection) over a real socketpair, with a sync loop that runs
jobs inline: what the protocol's tests cannot see, the system calls and the stack."""

import inspect
import selectors
import socket
import sys

import pytest

from prefork.config import Config
from prefork.servers.wsgi import WSGIServer


class InlineLoop:
    """A sync worker's loop: each job runs at once, its on_done right after."""

    multithread = False
    inflight = None

    def __init__(self):
        self.selector = selectors.DefaultSelector()
        self.connections = set()
        self.jobs = 0

    def run_job(self, job, on_done=None, counts=True, what=None):
        self.jobs += 1
        try:
            job()
        finally:
            if on_done is not None:
                on_done()

    def park(self, connection):
        self.connections.add(connection)

    def forget(self, connection):
        self.connections.discard(connection)

    def turn(self):
        for key, _ in self.selector.select(0):
            key.data()


@pytest.fixture
def serve():
    made = []

    def start(app, high_water=256 * 1024):
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        server = WSGIServer(listener, app, Config(), False, None)
        server.high_water = high_water
        loop = InlineLoop()
        client, conn = socket.socketpair()
        client.settimeout(5)
        server.accepted(conn, ("127.0.0.1", 40000), loop)
        made.append((listener, client))
        return loop, client
    yield start
    for listener, client in made:
        listener.close()
        client.close()


def read_all(client, until):
    data = b""
    while not data.endswith(until):
        data += client.recv(1 << 20)
    return data


def test_a_long_streamed_response_does_not_grow_the_stack(serve):
    # Each part is one pump job whose end hands the next action back to the
    # adapter's loop: on a sync worker, each part used to nest a few calls
    # deeper, until the socket filled up.
    parts = 150

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (b"%06d" % n for n in range(parts))

    loop, client = serve(app, high_water=1)
    limit = sys.getrecursionlimit()
    depth = len(inspect.stack())
    sys.setrecursionlimit(depth + 150)     # fewer frames than parts: no recursion allowed
    try:
        client.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        loop.turn()
    finally:
        sys.setrecursionlimit(limit)
    data = b""
    while not data.endswith(b"0\r\n\r\n"):
        data += client.recv(1 << 20)
        loop.turn()        # if the socket filled up, the rest waits for writable
    assert data.count(b"\r\n6\r\n") == parts and loop.jobs == parts + 1
    assert len(loop.connections) == 1


def test_a_thousand_pipelined_requests_in_one_read_are_answered_in_order(serve):
    def app(environ, start_response):
        body = environ["PATH_INFO"].encode()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]

    loop, client = serve(app)
    client.sendall(b"".join(b"GET /%d HTTP/1.1\r\nHost: a\r\n\r\n" % n for n in range(1000)))
    data = b""
    while data.count(b"HTTP/1.1 200") < 1000:
        loop.turn()
        data += client.recv(1 << 20)
    bodies = [part.rsplit(b"\r\n\r\n", 1)[-1] for part in data.split(b"HTTP/1.1 200 OK")[1:]]
    assert bodies == [b"/%d" % n for n in range(1000)]


def test_the_connection_waits_readable_between_requests_and_closes_on_eof(serve):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    loop, client = serve(app)
    (connection,) = loop.connections
    client.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    loop.turn()
    assert read_all(client, b"ok").startswith(b"HTTP/1.1 200 OK")
    key = loop.selector.get_key(connection.sock)
    assert key.events == selectors.EVENT_READ and connection.state == "head"
    client.shutdown(socket.SHUT_WR)
    loop.turn()
    assert connection.closed and not loop.connections and not loop.selector.get_map()
