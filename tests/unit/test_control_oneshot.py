"""The base of the master's one-request-per-connection servers (oneshot.py), with a
policy of waiting in the backlog when full, over real unix sockets; its other policy
and the control socket are in test_control_server.py, the metrics endpoint in
test_metrics_server.py."""

import socket

import pytest

from oneshot_driver import Clients, Clock, closed, reply, turn
from prefork.supervisor.oneshot import OneShotServer


class Upper(OneShotServer):
    """A line in, the line upper-cased out; at most 2 held; over 16 bytes: just closed."""

    what = "upper"
    max_clients = 2
    max_request = 16
    deadline = 1.0

    def complete(self, inbox: bytearray, eof: bool) -> bool:
        return b"\n" in inbox

    def answer(self, inbox: bytes) -> bytes:
        return inbox.split(b"\n", 1)[0].upper() + b"\n"


@pytest.fixture
def upper(tmp_path):
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(tmp_path / "upper.sock"))
    listener.listen(8)
    clock = Clock()
    server = Upper(listener, clock)
    clients = Clients(listener.getsockname())
    yield server, clock, clients.connect
    clients.close()
    server.close()


def test_full_without_eviction_the_rest_wait_in_the_backlog(upper):
    server, clock, connect = upper
    first, second = connect(), connect()
    turn(server)
    assert server.held() == 2 and server.sock not in server.waiting()[0]
    late = connect(b"late\n")
    turn(server)
    assert server.held() == 2 and not closed(first) and not closed(second)
    clock.now += Upper.deadline + 0.1
    server.handle([], [])
    assert closed(first) and closed(second)
    assert reply(server, late) == b"LATE\n"


def test_an_empty_refusal_just_closes(upper):
    server, _, connect = upper
    c = connect(b"x" * 40)
    assert reply(server, c) == b""
    assert server.held() == 0


def test_eof_before_a_whole_request_drops_the_client(upper):
    server, _, connect = upper
    c = connect(b"half")
    c.shutdown(socket.SHUT_WR)
    assert reply(server, c) == b""
    assert server.held() == 0



def test_next_deadline_is_the_longest_held_clients(upper):
    """The master's wait ends then, so a silent client is closed on time."""
    server, clock, connect = upper
    assert server.next_deadline() is None
    connect()
    turn(server)
    first = clock.now + Upper.deadline
    clock.now += 0.25
    connect()
    turn(server)
    assert server.next_deadline() == first
    clock.now = first + 0.01
    server.handle([], [])
    assert server.next_deadline() == first + 0.25
