"""The master's /metrics endpoint: answers from request heads, and the non-blocking server
driven in-process over loopback the way the master's select loop drives it."""

import socket

import pytest

from oneshot_driver import Clients, Clock, reply, turn
from prefork.errors import BindError, ConfigError
from prefork.metrics import CONTENT_TYPE
from prefork.supervisor import metrics_server
from prefork.supervisor.metrics_server import MetricsServer, head_complete, respond

TEXT = "# HELP x h\n# TYPE x gauge\nx 1\n"


def split(response: bytes):
    head, _, body = response.partition(b"\r\n\r\n")
    status, *fields = head.decode("latin-1").split("\r\n")
    return status, dict(f.split(": ", 1) for f in fields), body


def test_get_metrics():
    status, fields, body = split(respond(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
                                         lambda: TEXT))
    assert status == "HTTP/1.1 200 OK"
    date = fields.pop("Date")      # simple_response's, as the workers' own replies have
    assert date.endswith(" GMT")
    assert fields == {"Server": "prefork", "Content-Type": CONTENT_TYPE,
                      "Content-Length": str(len(TEXT)), "Connection": "close"}
    assert body == TEXT.encode()


def test_head_has_the_length_but_no_body():
    status, fields, body = split(respond(b"HEAD /metrics HTTP/1.0\r\n\r\n", lambda: TEXT))
    assert status == "HTTP/1.1 200 OK" and fields["Content-Length"] == str(len(TEXT))
    assert body == b""


def test_query_string_and_absolute_form_are_the_same_path():
    for target in (b"/metrics?name[]=x", b"http://host:9/metrics"):
        assert split(respond(b"GET " + target + b" HTTP/1.1\r\n\r\n", lambda: TEXT))[0] \
            == "HTTP/1.1 200 OK"


@pytest.mark.parametrize("head, code", [
    (b"GET / HTTP/1.1\r\n\r\n", "404"),
    (b"GET /metrics/ HTTP/1.1\r\n\r\n", "404"),
    (b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n", "405"),
    (b"DELETE /metrics HTTP/1.1\r\n\r\n", "405"),
    (b"GET /metrics\r\n\r\n", "400"),
    (b"GET  /metrics HTTP/1.1\r\n\r\n", "400"),
    (b"GET /metrics FTP/1.0\r\n\r\n", "400"),
    (b"GET /\xff HTTP/1.1\r\n\r\n", "400"),
])
def test_other_requests(head, code):
    called = []
    status, fields, body = split(respond(head, lambda: called.append(1) or TEXT))
    assert status.split()[1] == code, status
    assert fields["Connection"] == "close" and fields["Content-Length"] == str(len(body))
    assert not called     # nothing is rendered for a request that does not get it
    if code == "405":
        assert fields["Allow"] == "GET, HEAD"


def test_a_failing_renderer_answers_500():
    def broken():
        raise RuntimeError("bug")
    assert split(respond(b"GET /metrics HTTP/1.1\r\n\r\n", broken))[0] == \
        "HTTP/1.1 500 Internal Server Error"


def test_head_complete():
    assert not head_complete(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
    assert head_complete(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert head_complete(b"GET /metrics HTTP/1.0\n\n")


def test_bad_addresses_name_the_setting():
    with pytest.raises(ConfigError, match="metrics_bind"):
        MetricsServer("nocolon", lambda: TEXT)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        with pytest.raises(BindError, match=f"metrics_bind: cannot bind 127.0.0.1:{port}: "
                                            "address already in use"):
            MetricsServer(f"127.0.0.1:{port}", lambda: TEXT)


# -- the server, driven as the master drives it ------------------------------------


@pytest.fixture
def served():
    clock = Clock()
    server = MetricsServer("127.0.0.1:0", lambda: TEXT, clock=clock)
    clients = Clients(server.sock.getsockname()[:2], socket.AF_INET)
    yield server, clock, clients.connect
    clients.close()
    server.close()


def test_one_request_per_connection(served):
    server, _, connect = served
    c = connect()
    c.sendall(b"GET /metrics HTTP/1.1\r\n")
    turn(server)     # accept
    turn(server)     # half a head: nothing yet
    c.sendall(b"Host: x\r\n\r\n")
    status, _, body = split(reply(server, c))
    assert status == "HTTP/1.1 200 OK" and body == TEXT.encode()
    assert server.waiting() == ([server.sock], [])


def test_a_silent_client_is_dropped_after_the_deadline(served):
    server, clock, connect = served
    silent = connect()
    turn(server)
    assert len(server.waiting()[0]) == 2
    clock.now += metrics_server.CLIENT_DEADLINE + 0.1
    server.handle([], [])
    assert server.waiting() == ([server.sock], [])
    silent.settimeout(5)
    assert silent.recv(10) == b""


def test_at_most_max_clients_and_the_rest_wait_in_the_backlog(served):
    server, clock, connect = served
    silent = [connect() for _ in range(metrics_server.MAX_CLIENTS)]
    for _ in range(metrics_server.MAX_CLIENTS):
        turn(server)
        if server.sock not in server.waiting()[0]:
            break
    assert server.sock not in server.waiting()[0]   # full: the listener is not watched
    late = connect()
    late.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
    clock.now += metrics_server.CLIENT_DEADLINE + 0.1
    server.handle([], [])
    assert split(reply(server, late))[0] == "HTTP/1.1 200 OK"
    for s in silent:
        s.settimeout(5)
        assert s.recv(10) == b""


def test_an_oversized_head_gets_431(served):
    server, _, connect = served
    c = connect()
    c.sendall(b"GET /metrics HTTP/1.1\r\n" + b"X: " + b"y" * metrics_server.MAX_HEAD)
    assert split(reply(server, c))[0] == "HTTP/1.1 431 Request Header Fields Too Large"


def test_a_client_that_leaves_early_is_forgotten(served):
    server, _, connect = served
    c = connect()
    turn(server)
    c.close()
    turn(server)
    assert server.waiting() == ([server.sock], [])


def test_an_inherited_socket_is_served(served):
    server, _, _ = served
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(4)
    other = MetricsServer("ignored", lambda: TEXT, sock=sock)
    try:
        assert other.fileno() == sock.fileno() and not sock.getblocking()
        with socket.create_connection(sock.getsockname(), timeout=5) as c:
            c.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
            assert split(reply(other, c))[2] == TEXT.encode()
    finally:
        other.close()


def test_rebind_keeps_the_socket_when_only_the_spelling_changes_or_the_new_bind_fails():
    from prefork.sockets import BindOptions
    from prefork.supervisor.holdings import Holdings
    from prefork.supervisor.listeners import ListenerSet
    holdings = Holdings(ListenerSet(BindOptions(16)))
    holdings.rebind_metrics("127.0.0.1:0", lambda: TEXT)
    first = holdings.metrics
    port = first.sock.getsockname()[1]
    try:
        holdings.rebind_metrics("127.0.0.1:0", lambda: TEXT)       # unchanged
        assert holdings.metrics is first
        holdings.rebind_metrics(f"tcp://127.0.0.1:{port}", lambda: TEXT)
        assert holdings.metrics is first and holdings.metrics_bind == f"tcp://127.0.0.1:{port}"
        with socket.socket() as holder:
            holder.bind(("127.0.0.1", 0))
            holder.listen(1)
            with pytest.raises(BindError):
                holdings.rebind_metrics("127.0.0.1:%d" % holder.getsockname()[1], lambda: TEXT)
        assert holdings.metrics is first and first.sock.fileno() != -1
    finally:
        holdings.rebind_metrics("", lambda: TEXT)
    assert holdings.metrics is None and first.sock.fileno() == -1
