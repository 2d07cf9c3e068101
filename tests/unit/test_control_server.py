"""The one-request-per-connection server of the master's loop (oneshot.py) and the control
socket built on it, over real unix sockets, driven the way the master's select loop drives
them.  Deadlines are checked with a clock the test moves; everything else is real I/O."""

import json
import os
import socket
import threading
from pathlib import Path
from typing import List

import pytest

from oneshot_driver import Clock, closed, reply, turn
from prefork.errors import PreforkError
from prefork.supervisor import control
from prefork.supervisor.control import ControlServer

STATUS = b'{"cmd": "status"}\n'


@pytest.fixture
def served(tmp_path: Path):
    """(server, clock, connect, answers): a control socket whose status answer is fixed."""
    clock = Clock()
    asked: List[dict] = []

    def respond(message: dict) -> dict:
        asked.append(message)
        if message.get("cmd") == "boom":
            raise RuntimeError("bug")
        if message.get("cmd") == "big":
            return {"ok": True, "blob": "x" * message["size"]}
        return {"ok": True, "cmd": message.get("cmd")}

    server = ControlServer(str(tmp_path / "control.sock"), respond, clock=clock)
    clients: List[socket.socket] = []

    def connect(send: bytes = b"") -> socket.socket:
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.settimeout(5)
        c.connect(server.path)
        clients.append(c)
        if send:
            c.sendall(send)
        return c

    yield server, clock, connect, asked
    for c in clients:
        c.close()
    server.close()


def test_a_request_line_gets_a_reply_line(served):
    server, _, connect, asked = served
    c = connect(STATUS)
    assert json.loads(reply(server, c)) == {"ok": True, "cmd": "status"}
    assert asked == [{"cmd": "status"}] and server.held() == 0
    assert server.waiting() == ([server.sock], [])


def test_answered_in_the_turn_it_is_accepted(served):
    server, _, connect, _ = served
    c = connect(STATUS)
    turn(server)      # accept, read, answer and close: nothing is held after one turn
    assert server.held() == 0
    c.settimeout(5)
    assert c.recv(1000).endswith(b"\n")


def test_a_silent_client_is_dropped_at_its_deadline_not_before(served):
    server, clock, connect, asked = served
    silent = connect()
    turn(server)
    assert server.held() == 1
    clock.now += control.CLIENT_DEADLINE - 0.1
    server.handle([], [])
    assert server.held() == 1 and not closed(silent)
    clock.now += 0.2
    server.handle([], [])
    assert server.held() == 0 and closed(silent)
    assert asked == []


def test_a_client_sending_one_byte_at_a_time_is_answered(served):
    server, clock, connect, asked = served
    c = connect()
    for byte in STATUS[:-1]:
        c.sendall(bytes([byte]))
        turn(server)
        clock.now += 0.05
        assert server.held() == 1
    c.sendall(b"\n")
    assert json.loads(reply(server, c))["cmd"] == "status"
    assert asked == [{"cmd": "status"}]


def test_a_trickling_client_is_dropped_at_its_deadline(served):
    server, clock, connect, asked = served
    c = connect()
    sent = 0
    while sent < 100:
        try:
            c.sendall(b" ")
        except BrokenPipeError:
            break          # the server closed it
        sent += 1
        turn(server)
        clock.now += 0.1
    assert sent == int(control.CLIENT_DEADLINE / 0.1) + 1
    assert server.held() == 0 and asked == []


def test_a_request_over_the_cap_is_refused(served):
    server, _, connect, asked = served
    c = connect()
    payload = b'{"cmd": "status", "pad": "' + b"x" * control.MAX_REQUEST
    sender = threading.Thread(target=lambda: _send_ignoring_close(c, payload))
    sender.start()
    try:
        answer = json.loads(reply(server, c, turns=400))
    finally:
        sender.join(5)
    assert answer["ok"] is False and "request over 65536 bytes" in answer["error"]
    assert asked == [] and server.held() == 0


def _send_ignoring_close(sock: socket.socket, data: bytes) -> None:
    try:
        sock.sendall(data)
    except OSError:
        pass     # the server closed once it had read past its cap


def test_bad_requests_get_an_error_reply(served):
    server, _, connect, asked = served
    for line, error in ((b"not json\n", "bad request"), (b"[1]\n", "not an object")):
        answer = json.loads(reply(server, connect(line)))
        assert answer["ok"] is False and error in answer["error"]
    assert asked == []


def test_a_failing_answer_is_an_error_reply_and_the_server_goes_on(served):
    server, _, connect, _ = served
    answer = json.loads(reply(server, connect(b'{"cmd": "boom"}\n')))
    assert answer == {"ok": False, "error": "the master failed to answer: bug"}
    assert json.loads(reply(server, connect(STATUS)))["ok"] is True


def test_a_half_closed_client_without_a_newline_is_answered(served):
    server, _, connect, _ = served
    c = connect(b'{"cmd": "status"}')
    c.shutdown(socket.SHUT_WR)
    assert json.loads(reply(server, c))["cmd"] == "status"


def test_a_client_that_leaves_early_is_forgotten(served):
    server, _, connect, asked = served
    c = connect(b'{"cmd": ')
    turn(server)
    assert server.held() == 1
    c.close()
    turn(server)
    assert server.held() == 0 and asked == []


def test_many_silent_clients_never_keep_a_real_one_waiting(served):
    server, _, connect, asked = served
    silent = []
    for _ in range(3):      # the backlog takes one batch between two turns
        silent += [connect() for _ in range(control.MAX_CLIENTS)]
        turn(server)
    assert server.held() == control.MAX_CLIENTS
    assert server.sock in server.waiting()[0]     # full, and still accepting
    # Each batch made room for itself by closing the one before: the newest are held.
    assert [closed(s) for s in silent] == [True] * (2 * control.MAX_CLIENTS) \
        + [False] * control.MAX_CLIENTS
    c = connect(STATUS)
    turn(server)          # accepted, answered, and never held: no silent one had to go
    c.settimeout(5)
    assert json.loads(c.recv(1000))["cmd"] == "status"
    first_held = 2 * control.MAX_CLIENTS
    assert server.held() == control.MAX_CLIENTS and not closed(silent[first_held])
    connect(b'{"cmd": ')     # held: the oldest silent one makes room
    turn(server)
    assert server.held() == control.MAX_CLIENTS
    assert closed(silent[first_held]) and not closed(silent[first_held + 1])


def test_a_newcomer_closes_a_silent_client_before_one_being_answered(served):
    server, _, connect, _ = served
    size = 8 * 1024 * 1024          # far more than a unix socket buffers
    slow_reader = connect(b'{"cmd": "big", "size": %d}\n' % size)
    turn(server)
    assert server.waiting()[1], "the big reply should still be going out"
    silent = [connect() for _ in range(control.MAX_CLIENTS - 1)]
    turn(server)
    assert server.held() == control.MAX_CLIENTS
    connect()
    turn(server)
    assert closed(silent[0]) and server.waiting()[1]    # the writer kept its place
    assert server.held() == control.MAX_CLIENTS
    data = reply(server, slow_reader, turns=5000)
    assert len(json.loads(data)["blob"]) == size


def test_close_removes_the_file_close_in_child_does_not(tmp_path):
    path = tmp_path / "c.sock"
    server = ControlServer(str(path), lambda m: {"ok": True})
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    held = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    held.connect(str(path))
    turn(server)
    server.close_in_child()      # a forked child letting go of the master's fds
    assert path.exists() and server.held() == 0
    held.close()
    other = ControlServer(str(path), lambda m: {"ok": True})   # nobody listens: stale
    other.close()
    assert not path.exists()


def test_a_live_socket_is_not_taken_over(tmp_path):
    path = str(tmp_path / "c.sock")
    server = ControlServer(path, lambda m: {"ok": True})
    try:
        with pytest.raises(PreforkError, match="in use by a running process"):
            ControlServer(path, lambda m: {"ok": True})
        turn(server)      # the probe connected and left: nothing held
        turn(server)
        assert server.held() == 0
    finally:
        server.close()


def test_an_inherited_socket_is_served(tmp_path):
    path = str(tmp_path / "c.sock")
    first = ControlServer(path, lambda m: {"ok": True, "who": "old"})
    dup = socket.socket(fileno=os.dup(first.fileno()))     # what exec hands the new master
    first.close_in_child()
    second = ControlServer(path, lambda m: {"ok": True, "who": "new"}, inherited=dup)
    try:
        assert second.fileno() == dup.fileno() and not dup.getblocking()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
            c.connect(path)
            c.sendall(STATUS)
            assert json.loads(reply(second, c))["who"] == "new"
    finally:
        second.close()


def test_request_reads_a_reply_larger_than_the_request_cap(tmp_path):
    """The client side: a status of many workers is more than 64 KiB."""
    server = ControlServer(str(tmp_path / "c.sock"),
                           lambda m: {"ok": True, "blob": "y" * (4 * control.MAX_REQUEST)})
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            turn(server)

    thread = threading.Thread(target=loop)
    thread.start()
    try:
        answer = control.request(server.path, {"cmd": "status"}, timeout=5)
    finally:
        stop.set()
        thread.join(5)
        server.close()
    assert len(answer["blob"]) == 4 * control.MAX_REQUEST


def test_request_waits_while_the_backlog_is_full(tmp_path):
    """A unix socket's connect fails at once when the backlog is full; request() waits."""
    path = str(tmp_path / "c.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    queued = []
    try:
        while True:       # fill the backlog
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            c.setblocking(False)
            queued.append(c)
            try:
                c.connect(path)
            except BlockingIOError:
                break
        server = ControlServer(path, lambda m: {"ok": True, "cmd": m["cmd"]}, inherited=listener)
        stop = threading.Event()

        def loop() -> None:
            stop.wait(0.3)      # the request finds the backlog full, then it drains
            while not stop.is_set():
                turn(server)

        thread = threading.Thread(target=loop)
        thread.start()
        try:
            assert control.request(path, {"cmd": "status"}, timeout=5)["cmd"] == "status"
        finally:
            stop.set()
            thread.join(5)
    finally:
        for c in queued:
            c.close()
        listener.close()
