"""HTTP/1.1 framing end to end: keep-alive, pipelining, chunked both ways, 100-continue,
HEAD, HTTP/1.0, limits and timeouts as flags, and request-smuggling inputs.

Everything runs against real servers over loopback with raw sockets; whether
the app was reached is read from the calls file (see tests/apps/wsgiapps.py).
"""

from __future__ import annotations

import email.utils
import select
import time

import pytest

from http_helpers import Conn, build, get, serving, wsgiapps

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with serving(tmp_path_factory, "protocol", "router", "-w", "1", "-k", "sync") as served:
        yield served


@pytest.fixture(scope="module")
def limited(tmp_path_factory):
    with serving(tmp_path_factory, "limits", "echo", "-w", "1", "-k", "sync",
                 "--limit-request-line", "200", "--limit-request-fields", "5",
                 "--limit-request-field-size", "100", "--max-body-size", "1000",
                 "--header-timeout", "1", "--client-timeout", "1",
                 "--keepalive", "1") as served:
        yield served


def refused(served, conn: Conn, status: int, method: str = "GET") -> None:
    """``conn`` got ``status``, was closed, and its request never reached the app."""
    resp = conn.response(method)
    assert resp.status == status, resp
    assert resp.header("Connection") == "close"
    assert conn.at_eof()
    assert served.calls_from(conn.port) == []


@pytest.mark.timeout(20)
def test_keepalive_serves_requests_on_one_connection(server):
    with Conn(server.address) as conn:
        for n in range(3):
            resp = conn.request("GET", f"/ka?n={n}")
            assert resp.status == 200
            assert resp.json()["query"] == f"n={n}"
            assert resp.json()["remote_port"] == conn.port
            assert resp.header("Connection") is None   # HTTP/1.1 persists by default
    assert len(server.calls_from(conn.port)) == 3


@pytest.mark.timeout(20)
def test_pipelined_responses_come_in_request_order(server):
    requests = [("GET", "/p?n=0", b""), ("POST", "/p?n=1", b"x" * 5000), ("HEAD", "/p?n=2", b""),
                ("PUT", "/p?n=3", b"yz"), ("GET", "/stream/?chunks=3&size=100000&n=4", b""),
                ("DELETE", "/p?n=5", b"")]
    with Conn(server.address) as conn:
        conn.send(b"".join(build(m, t, body=b) for m, t, b in requests))
        for n, (method, target, body) in enumerate(requests):
            resp = conn.response(method)
            assert resp.status == 200, (n, resp)
            if method == "HEAD":
                assert resp.body == b"" and int(resp.header("Content-Length")) > 0
            elif target.startswith("/stream"):
                assert resp.body == wsgiapps.pattern(300000)
            else:
                assert resp.json()["query"] == f"n={n}"
                assert resp.json()["body"] == body.decode()
        calls = server.calls_from(conn.port)
        assert [c["method"] for c in calls] == [m for m, _, _ in requests]
        assert conn.request("GET", "/after").status == 200


@pytest.mark.timeout(20)
def test_http10_closes_unless_keepalive_asked(server):
    with Conn(server.address) as conn:
        resp = conn.request("GET", "/old", version="HTTP/1.0")
        assert resp.status == 200 and resp.json()["protocol"] == "HTTP/1.0"
        assert resp.header("Connection") == "close"
        assert conn.at_eof()
    with Conn(server.address) as conn:
        for n in range(2):
            resp = conn.request("GET", f"/old?n={n}", [("Connection", "keep-alive")],
                                version="HTTP/1.0")
            assert resp.status == 200 and resp.json()["query"] == f"n={n}"
            assert resp.header("Connection") == "keep-alive"


@pytest.mark.timeout(20)
def test_chunked_request_body_arrives_whole(server):
    with Conn(server.address) as conn:
        conn.send(b"POST /chunked HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        conn.send(b"5;ext=1\r\nhello\r\n")
        conn.send(b"1\r\n \r\n6\r\nworld!\r\n")
        conn.send(b"0\r\nX-Trailer: yes\r\n\r\n")
        info = conn.response("POST").json()
        assert info["body"] == "hello world!"
        assert info["headers"]["CONTENT_LENGTH"] == "12"
        assert info["headers"]["HTTP_TRANSFER_ENCODING"] == "chunked"
        # Bigger than body_buffer_size (1 MiB): the spooled-to-disk path.
        big = wsgiapps.pattern(3 << 20)
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(big[i:i + 70000]), big[i:i + 70000])
                          for i in range(0, len(big), 70000))
        conn.send(b"PUT /big HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                  + chunks + b"0\r\n\r\n")
        info = conn.response("PUT").json()
        assert info["body"].encode("latin-1") == big


@pytest.mark.timeout(20)
def test_response_framing_follows_what_the_app_gives(server):
    with Conn(server.address) as conn:
        small = conn.request("GET", "/stream/?chunks=3&size=10")
        assert small.header("Content-Length") == "30" and not small.chunked
        large = conn.request("GET", "/stream/?chunks=8&size=65536")
        assert large.chunked and large.header("Content-Length") is None
        assert large.complete and large.body == wsgiapps.pattern(8 * 65536)
    with Conn(server.address) as conn:    # HTTP/1.0 has no chunked: the close delimits
        resp = conn.request("GET", "/stream/?chunks=8&size=65536", version="HTTP/1.0")
        assert not resp.chunked and resp.header("Content-Length") is None
        assert resp.header("Connection") == "close"
        assert resp.body == wsgiapps.pattern(8 * 65536)


@pytest.mark.timeout(20)
def test_head_has_no_body_and_keeps_the_connection_in_step(server):
    with Conn(server.address) as conn:
        resp = conn.request("HEAD", "/stream/?chunks=3&size=10")
        assert resp.status == 200 and resp.header("Content-Length") == "30"
        resp = conn.request("HEAD", "/large/?size=2000000")
        assert resp.header("Content-Length") == "2000000"
        # A body wrongly sent after a HEAD would be read as this response.
        resp = conn.request("GET", "/next")
        assert resp.status == 200 and resp.json()["path"] == "/next"


@pytest.mark.timeout(20)
def test_expect_100_continue(server):
    with Conn(server.address) as conn:
        conn.send(build("POST", "/upload", [("Expect", "100-continue"),
                                            ("Content-Length", "11")]))
        interim = conn.response()         # the body is not sent yet: this must come first
        assert interim.status == 100
        conn.send(b"hello world")
        resp = conn.response("POST")
        assert resp.status == 200 and resp.json()["body"] == "hello world"
        # No body coming: no 100, straight to the answer.
        resp = conn.request("GET", "/nobody", [("Expect", "100-continue")])
        assert resp.status == 200
    with Conn(server.address) as conn:
        conn.send(build("POST", "/upload", [("Expect", "tea"), ("Content-Length", "1")]))
        refused(server, conn, 417)


@pytest.mark.timeout(20)
def test_connection_close_is_honoured(server):
    with Conn(server.address) as conn:
        conn.send(build("GET", "/bye", [("Connection", "close")]) + build("GET", "/never"))
        resp = conn.response()
        assert resp.status == 200 and resp.header("Connection") == "close"
        assert conn.at_eof()
        assert [c["path"] for c in server.calls_from(conn.port)] == ["/bye"]


@pytest.mark.timeout(20)
def test_date_and_server_headers(server):
    for resp in (get(server.address, "/d"), get(server.address, "/d", method="BAD METHOD")):
        assert resp.header("Server") == "prefork"
        date = email.utils.parsedate_to_datetime(resp.header("Date"))
        assert abs(date.timestamp() - time.time()) < 10
        assert resp.header("Date").endswith(" GMT")


@pytest.mark.timeout(20)
def test_any_token_method_reaches_the_app(server):
    with Conn(server.address) as conn:
        for method in ("PURGE", "MKCOLA", "M-SEARCH", "QUERY"):
            resp = conn.request(method, "/m", body=b"q" if method == "QUERY" else b"")
            assert resp.status == 200 and resp.json()["method"] == method


# -- limits as flags -------------------------------------------------------


@pytest.mark.timeout(20)
def test_request_line_limit_414(limited):
    fits = "/" + "a" * (200 - len("GET / HTTP/1.1"))
    with Conn(limited.address) as conn:
        assert conn.request("GET", fits).status == 200   # exactly 200 bytes
    # The calls file works for this server, so the empty ones below mean something.
    assert len(limited.calls_from(conn.port)) == 1
    with Conn(limited.address) as conn:
        conn.send(build("GET", fits + "a"))
        refused(limited, conn, 414)


@pytest.mark.timeout(20)
def test_header_count_and_size_limits_431(limited):
    five = [(f"X-{n}", "v") for n in range(4)]            # + Host = 5
    assert get(limited.address, "/", headers=five).status == 200
    with Conn(limited.address) as conn:
        conn.send(build("GET", "/", five + [("X-9", "v")]))
        refused(limited, conn, 431)
    field = [("X-Big", "v" * (100 - len("X-Big: ")))]
    assert get(limited.address, "/", headers=field).status == 200   # exactly 100 bytes
    with Conn(limited.address) as conn:
        conn.send(build("GET", "/", [("X-Big", field[0][1] + "v")]))
        refused(limited, conn, 431)


@pytest.mark.timeout(20)
def test_body_limit_413(limited):
    assert get(limited.address, "/", method="POST", body=b"b" * 1000).status == 200
    with Conn(limited.address) as conn:       # refused on the head: the body is never sent
        conn.send(build("POST", "/", [("Content-Length", "1001")]))
        refused(limited, conn, 413, "POST")
    with Conn(limited.address) as conn:
        conn.send(build("POST", "/", [("Transfer-Encoding", "chunked")])
                  + b"200\r\n" + b"c" * 512 + b"\r\n" + b"200\r\n")
        refused(limited, conn, 413, "POST")


def nothing_received(conn: Conn) -> bool:
    """Neither bytes nor a close are waiting (the socket's timeout would make recv wait)."""
    return not select.select([conn.sock], [], [], 0)[0]


@pytest.mark.timeout(20)
def test_slow_head_gets_408_without_holding_the_worker(limited):
    with Conn(limited.address) as stalled:
        stalled.send(b"GET / HTTP/1.1\r\nHost: t\r\n")
        began = time.monotonic()
        # One sync worker: another client is answered while this head is
        # pending, before the stalled one hears anything.
        assert get(limited.address, "/meanwhile").status == 200
        assert nothing_received(stalled)
        refused(limited, stalled, 408)
        waited = time.monotonic() - began
    assert 0.9 <= waited < 5, waited


@pytest.mark.timeout(20)
def test_stalled_body_gets_408(limited):
    with Conn(limited.address) as conn:
        conn.send(build("POST", "/", [("Content-Length", "10")]) + b"abc")
        began = time.monotonic()
        refused(limited, conn, 408, "POST")
        assert 0.9 <= time.monotonic() - began < 5


@pytest.mark.timeout(20)
def test_silent_client_is_closed(limited):
    with Conn(limited.address) as conn:
        began = time.monotonic()
        assert conn.reader.read(1) == b""      # closed, with nothing said
        # TCP_DEFER_ACCEPT keeps a silent connection from the worker for about
        # a SYN-ACK retransmission first; then the header timeout runs.
        assert 0.9 <= time.monotonic() - began < 8


@pytest.mark.timeout(20)
def test_idle_keepalive_connection_is_closed(limited):
    with Conn(limited.address) as conn:
        assert conn.request("GET", "/").status == 200
        began = time.monotonic()
        assert conn.at_eof()
        assert 0.9 <= time.monotonic() - began < 5


# -- smuggling -------------------------------------------------------------

SMUGGLING = {
    "cl-and-te": b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n",
    "te-and-cl": b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
                 b"Content-Length: 40\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n",
    "two-cl-differ": b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 30"
                     b"\r\n\r\nabcGET /smuggled HTTP/1.1\r\n\r\n",
    "two-cl-same": b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 3"
                   b"\r\n\r\nabc",
    "cl-list": b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3, 3\r\n\r\nabc",
    "cl-signed": b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: +3\r\n\r\nabc",
    "bad-chunk-size": b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                      b"zz\r\nhello\r\n0\r\n\r\n",
    "chunk-size-overflow": b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                           b"1" + b"0" * 16 + b"\r\nhello\r\n0\r\n\r\n",
    "chunk-without-crlf": b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                          b"3\r\nabcX\r\n0\r\n\r\n",
    "bare-lf-head": b"GET / HTTP/1.1\nHost: t\n\n",
    "bare-lf-field": b"GET / HTTP/1.1\r\nHost: t\nX-Smuggle: 1\r\n\r\n",
    "bare-cr-field": b"GET / HTTP/1.1\r\nHost: t\r\nX-A: 1\rX-B: 2\r\n\r\n",
    "obs-fold": b"GET / HTTP/1.1\r\nHost: t\r\nX-Folded: a\r\n b\r\n\r\n",
    "space-before-colon": b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length : 3\r\n\r\nabc",
    "te-not-chunked-last": b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, x\r\n\r\n",
    "te-in-http10": b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
}


@pytest.mark.timeout(20)
@pytest.mark.parametrize("raw", list(SMUGGLING.values()), ids=list(SMUGGLING))
def test_smuggling_inputs_get_400_and_never_reach_the_app(server, raw):
    with Conn(server.address) as conn:
        conn.send(raw)
        refused(server, conn, 400, "POST")


@pytest.mark.timeout(20)
def test_unknown_transfer_coding_gets_501(server):
    with Conn(server.address) as conn:
        conn.send(b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
                  b"5\r\nhello\r\n0\r\n\r\n")
        refused(server, conn, 501, "POST")
