"""Bind specs and listening sockets (real sockets, loopback only)."""

import os
import select
import socket
import stat

import pytest

from prefork.errors import EXIT_BIND, EXIT_CONFIG, BindError, ConfigError
from prefork.sockets import (BindOptions, BindSpec, accept_queue_length, accepter, bind, parse,
                             parse_all)
from prefork.supervisor.listeners import ListenerSet

V4, V6 = socket.AF_INET, socket.AF_INET6


def ipv6_loopback():
    try:
        with socket.socket(V6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.fixture
def listeners():
    """Closes whatever the test bound."""
    made = []
    yield made
    for item in made:
        item.close()


@pytest.fixture
def taken_port():
    # A plain listener without SO_REUSEADDR: no other socket may bind its port.
    with socket.socket(V4) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        yield holder.getsockname()[1]


# -- parse ---------------------------------------------------------------------

@pytest.mark.parametrize("text, family, host, port", [
    ("127.0.0.1:8000", V4, "127.0.0.1", 8000),
    ("localhost:80", V4, "localhost", 80),
    ("example.org:65535", V4, "example.org", 65535),
    (":8000", V4, "0.0.0.0", 8000),
    ("0.0.0.0:0", V4, "0.0.0.0", 0),
    ("[::1]:8000", V6, "::1", 8000),
    ("[::]:443", V6, "::", 443),
    ("[]:443", V6, "::", 443),
    ("[fe80::1%lo]:9", V6, "fe80::1%lo", 9),
])
def test_parse(text, family, host, port):
    assert parse(text) == BindSpec(text, family, host, port)


@pytest.mark.parametrize("text, words", [
    ("8000", "expected HOST:PORT"),
    ("", "expected HOST:PORT"),
    ("localhost", "expected HOST:PORT"),
    ("::1:8000", "write IPv6 addresses as [ADDR]:PORT"),
    ("[::1:8000", "unbalanced '['"),
    ("host:http", "port 'http' is not a number"),
    ("host:", "port '' is not a number"),
    ("host:65536", "port 65536 is out of range"),
    ("host:-1", "port '-1' is not a number"),
    ("unix:", "no path after 'unix:'"),
    ("unix-dgram:", "no path after 'unix-dgram:'"),
    ("fd://", "expected fd://N"),
    ("fd://three", "expected fd://N"),
    ("udp://host", "expected HOST:PORT"),
])
def test_parse_rejects(text, words):
    with pytest.raises(ConfigError) as info:
        parse(text)
    assert info.value.status == EXIT_CONFIG
    assert f"bind address {text!r}" in str(info.value) and words in str(info.value)


@pytest.mark.parametrize("text", ["127.0.0.1:8_0", "127.0.0.1: 80", "127.0.0.1:+80",
                                  "127.0.0.1:\u0668\u0660"])
def test_parse_accepts_only_ascii_digits_as_port(text):
    with pytest.raises(ConfigError):
        parse(text)


def test_parse_all_keeps_order():
    assert [s.text for s in parse_all([":2", "[::1]:1", "a:3"])] == [":2", "[::1]:1", "a:3"]


# -- bind ----------------------------------------------------------------------

def test_bind_makes_a_nonblocking_reusable_listening_socket(listeners):
    listener = bind(parse("127.0.0.1:0"), BindOptions(16))
    listeners.append(listener)
    sock = listener.sock
    port = listener.address[1]
    assert port != 0 and listener.name == f"127.0.0.1:{port}"
    assert sock.family == V4 and sock.type == socket.SOCK_STREAM
    assert not sock.getblocking()
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) != 0
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) != 0
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        assert select.select([sock], [], [], 5)[0] == [sock]
        conn, _ = sock.accept()
        conn.close()


def test_bind_all_interfaces(listeners):
    listener = bind(parse(":0"), BindOptions(16))
    listeners.append(listener)
    assert listener.address[0] == "0.0.0.0"


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback")
def test_bind_ipv6_is_v6_only(listeners):
    listener = bind(parse("[::1]:0"), BindOptions(16))
    listeners.append(listener)
    assert listener.sock.family == V6
    assert listener.name == f"[::1]:{listener.address[1]}"
    assert listener.sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1


def test_bind_error_names_the_address(taken_port):
    text = f"127.0.0.1:{taken_port}"
    with pytest.raises(BindError) as info:
        bind(parse(text), BindOptions(16))
    assert info.value.status == EXIT_BIND == 4
    assert str(info.value) == f"cannot bind {text}: address already in use"


def test_bind_error_for_an_address_not_on_this_host():
    # 192.0.2.0/24 is TEST-NET-1: documentation only, never assigned to a host.
    with pytest.raises(BindError, match=r"^cannot bind 192\.0\.2\.1:0: address not available"):
        bind(parse("192.0.2.1:0"), BindOptions(16))


# -- ListenerSet ---------------------------------------------------------------

def spec(name):
    # Distinct texts make distinct specs even though all ask for a free loopback port.
    return BindSpec(name, V4, "127.0.0.1", 0)


def is_closed(listener):
    return listener.sock.fileno() == -1


def test_acquire_binds_once_and_returns_in_spec_order():
    pool = ListenerSet(BindOptions(backlog=8))
    try:
        a, b = pool.acquire([spec("a"), spec("b")])
        assert a.spec.text == "a" and b.spec.text == "b" and a.address != b.address
        # A reload asking for the same specs gets the same sockets, not new binds.
        b2, c, a2 = pool.acquire([spec("b"), spec("c"), spec("a")])
        assert (a2, b2) == (a, b) and a2.sock is a.sock
        assert {l.spec.text for l in pool.all()} == {"a", "b", "c"}
    finally:
        pool.close_all()
    assert pool.all() == [] and is_closed(a) and is_closed(b) and is_closed(c)


def test_acquire_is_all_or_nothing(taken_port):
    pool = ListenerSet(BindOptions(backlog=8))
    try:
        [kept] = pool.acquire([spec("kept")])
        with pytest.raises(BindError, match=f"127.0.0.1:{taken_port}"):
            pool.acquire([spec("kept"), spec("fresh"), parse(f"127.0.0.1:{taken_port}")])
        assert pool.all() == [kept] and not is_closed(kept)
        [fresh] = pool.acquire([spec("fresh")])     # nothing half-bound was left behind
        assert not is_closed(fresh)
    finally:
        pool.close_all()


def test_keep_only_closes_what_no_generation_uses():
    pool = ListenerSet(BindOptions(backlog=8))
    try:
        a, b, c = pool.acquire([spec("a"), spec("b"), spec("c")])
        pool.keep_only([spec("b")])
        assert pool.all() == [b]
        assert is_closed(a) and is_closed(c) and not is_closed(b)
        pool.keep_only([spec("b"), spec("z")])       # unknown specs are not bound by keep_only
        assert pool.all() == [b]
    finally:
        pool.close_all()


def test_accept_queue_length_counts_connections_waiting_for_accept():
    listener = bind(parse("127.0.0.1:0"), BindOptions(16))
    clients = [socket.create_connection(listener.address) for _ in range(3)]
    try:
        assert accept_queue_length(listener.sock) == 3
        conn, _ = _accept_when_ready(listener.sock)
        conn.close()
        assert accept_queue_length(listener.sock) == 2
    finally:
        for c in clients:
            c.close()
        listener.close()


def _accept_when_ready(sock):
    sock.setblocking(True)
    try:
        return sock.accept()
    finally:
        sock.setblocking(False)


# -- the other kinds -------------------------------------------------------------

@pytest.mark.parametrize("text, family, kind, host, port", [
    ("udp://127.0.0.1:5353", socket.AF_INET, socket.SOCK_DGRAM, "127.0.0.1", 5353),
    ("udp://[::1]:53", socket.AF_INET6, socket.SOCK_DGRAM, "::1", 53),
    ("udp://:53", socket.AF_INET, socket.SOCK_DGRAM, "0.0.0.0", 53),
    ("tcp://127.0.0.1:80", socket.AF_INET, socket.SOCK_STREAM, "127.0.0.1", 80),
])
def test_parse_udp_and_tcp_prefixes(text, family, kind, host, port):
    assert parse(text) == BindSpec(text, family, host, port, kind)


def test_parse_unix_paths_absolute_and_fd():
    assert parse("unix:/run/app.sock") == BindSpec("unix:/run/app.sock", socket.AF_UNIX, "", 0,
                                                   socket.SOCK_STREAM, path="/run/app.sock")
    dgram = parse("unix-dgram:app.sock")
    assert dgram.type == socket.SOCK_DGRAM and dgram.path == os.path.abspath("app.sock")
    assert parse("fd://7").fd == 7


def test_a_unix_socket_is_made_with_its_mode_and_replaced_when_stale(tmp_path):
    path = tmp_path / "app.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()                      # the file stays, nobody listens: a crash's leftover
    listener = bind(parse(f"unix:{path}"), BindOptions(16, unix_mode=0o640))
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
        assert listener.name == f"unix:{path}"
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(str(path))
    finally:
        listener.close(unlink=True)
    assert not path.exists()


@pytest.mark.parametrize("kind, prefix", [(socket.SOCK_STREAM, "unix"),
                                          (socket.SOCK_DGRAM, "unix-dgram")])
def test_a_live_unix_socket_is_a_bind_error(tmp_path, kind, prefix):
    path = tmp_path / "live.sock"
    with socket.socket(socket.AF_UNIX, kind) as live:
        live.bind(str(path))
        if kind == socket.SOCK_STREAM:
            live.listen(1)
        with pytest.raises(BindError) as info:
            bind(parse(f"{prefix}:{path}"), BindOptions(16))
        assert info.value.status == EXIT_BIND and "in use by a running process" in str(info.value)
    assert path.exists()


def test_a_regular_file_is_never_replaced(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("keep")
    with pytest.raises(BindError, match="exists and is not a socket"):
        bind(parse(f"unix:{path}"), BindOptions(16))
    assert path.read_text() == "keep"


def test_udp_binds_without_listening():
    listener = bind(parse("udp://127.0.0.1:0"), BindOptions(16))
    try:
        assert listener.datagram and listener.name.startswith("udp://127.0.0.1:")
    finally:
        listener.close()


def test_fd_adopts_an_open_socket_and_makes_it_listen():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    listener = bind(parse(f"fd://{sock.detach()}"), BindOptions(16))
    try:
        with socket.create_connection(listener.address[:2], timeout=5):
            pass                         # it listens now
        assert listener.spec.path == ""  # a unix fd's file would not be ours to remove
    finally:
        listener.close(unlink=True)


def test_fd_that_is_not_a_socket_is_a_bind_error(tmp_path):
    fd = os.open(tmp_path / "plain", os.O_CREAT | os.O_RDWR)
    try:
        with pytest.raises(BindError, match="is not a socket"):
            bind(parse(f"fd://{fd}"), BindOptions(16))
    finally:
        os.close(fd)


def test_wake_one_registers_a_listener_exclusively_and_it_still_reports():
    selectors = pytest.importorskip("selectors")
    from prefork.worker.loop import EPOLLEXCLUSIVE, wake_one
    listener = bind(parse("127.0.0.1:0"), BindOptions(16))
    selector = selectors.DefaultSelector()
    try:
        selector.register(listener.sock, selectors.EVENT_READ, "listener")
        exclusive = wake_one(selector, listener.sock)
        assert exclusive == bool(EPOLLEXCLUSIVE and isinstance(selector,
                                                             selectors.EpollSelector))
        with socket.create_connection(listener.address[:2], timeout=5):
            assert [key.data for key, _ in selector.select(5)] == ["listener"]
        selector.unregister(listener.sock)     # and it can be taken out again
    finally:
        selector.close()
        listener.close()


def test_reuse_port_udp_needs_a_port():
    pool = ListenerSet(BindOptions(16, reuse_port=True))
    with pytest.raises(BindError, match="needs a port"):
        pool.acquire([parse("udp://127.0.0.1:0")])


@pytest.mark.parametrize("kind", ["tcp", "unix"])
def test_accepter_gives_what_socket_accept_gives(kind, tmp_path):
    if kind == "tcp":
        listener = socket.create_server(("127.0.0.1", 0))
        target = listener.getsockname()
    else:
        listener = socket.socket(socket.AF_UNIX)
        target = str(tmp_path / "s")
        listener.bind(target)
        listener.listen()
    listener.setblocking(False)
    accept = accepter(listener)
    with listener, socket.socket(listener.family) as client:
        with pytest.raises(BlockingIOError):
            accept()
        client.connect(target)
        select.select([listener], [], [], 5)
        conn, address = accept()
        with conn:
            assert isinstance(conn, socket.socket)
            assert (conn.family, conn.type) == (listener.family, socket.SOCK_STREAM)
            assert conn.getblocking() and conn.gettimeout() is None
            assert not conn.get_inheritable()
            assert address == client.getsockname()
            client.sendall(b"x")
            assert conn.recv(1) == b"x"
