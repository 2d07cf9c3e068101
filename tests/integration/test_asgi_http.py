"""ASGI over real sockets: a raw app exercising every HTTP message type, and a FastAPI app.

One server per module (``--root-path /api`` on the raw one); httpx for the
ordinary requests, raw bytes (http_helpers.Conn) for the edge cases:
pipelining, 100-continue, HEAD, chunked request bodies, an app failing
before and after its response started, a client that goes away.
"""

from __future__ import annotations

import hashlib
import os
import time

import pytest

from harness import APPS, PreforkProcess
from http_helpers import CALLS_ENV, Conn, Served

httpx = pytest.importorskip("httpx")
pytestmark = pytest.mark.integration


def asgi_serving(tmp_path_factory, name: str, app: str, *args: str):
    workdir = tmp_path_factory.mktemp(name)
    calls = workdir / "calls.jsonl"
    proc = PreforkProcess(["serve", f"asgiapps:{app}", "-b", "127.0.0.1:0", *args], workdir,
                          {CALLS_ENV: str(calls)})
    try:
        proc.wait_ready()
        yield Served(proc, calls)
    finally:
        proc.cleanup()


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    yield from asgi_serving(tmp_path_factory, "asgi_raw", "raw", "-w", "1", "--root-path", "/api",
                            "--access-log", "-", "--loop", "asyncio")


@pytest.fixture(scope="module")
def fast(tmp_path_factory):
    pytest.importorskip("fastapi")
    yield from asgi_serving(tmp_path_factory, "asgi_fast", "fast", "-w", "2")


@pytest.fixture(scope="module")
def impatient(tmp_path_factory):
    yield from asgi_serving(tmp_path_factory, "asgi_impatient", "raw", "-w", "1",
                            "--client-timeout", "0.5")


def url(served: Served, path: str) -> str:
    host, port = served.address
    return f"http://{host}:{port}{path}"


# -- the raw app -------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_the_worker_is_asyncio_with_lifespan(raw):
    assert raw.proc.wait_for(r"worker ready \(gen 1, asyncio on asyncio, ASGI, lifespan\)")
    assert len(raw.records("startup")) == 1


@pytest.mark.timeout(30)
def test_scope_as_the_app_sees_it(raw):
    r = httpx.post(url(raw, "/api/echo/caf%C3%A9?x=1"), content=b"hello body",
                   headers={"X-Custom": "Yes"})
    assert r.status_code == 200
    seen = r.json()
    assert seen["type"] == "http" and seen["asgi"] == {"version": "3.0", "spec_version": "2.4"}
    assert (seen["method"], seen["http_version"], seen["scheme"]) == ("POST", "1.1", "http")
    assert (seen["path"], seen["raw_path"]) == ("/api/echo/café", "/api/echo/caf%C3%A9")
    assert (seen["root_path"], seen["query_string"]) == ("/api", "x=1")
    assert ["x-custom", "Yes"] in seen["headers"]
    assert seen["client"][0] == "127.0.0.1" and seen["server"] == list(raw.address)
    assert seen["state"]["booted_by"] > 0
    assert "http.response.pathsend" in seen["extensions"]
    assert (seen["body_length"], seen["body_messages"]) == (10, 1)


@pytest.mark.timeout(30)
def test_responses_with_and_without_length(raw):
    with Conn(raw.address) as conn:
        r = conn.request("GET", "/api/hello")
        assert (r.status, r.body, r.header("Content-Length")) == (200, b"Hello, world!", "13")
        r = conn.request("GET", "/api/stream?parts=4")
        assert r.chunked and r.complete and r.body == b"part 0\npart 1\npart 2\npart 3\n"
        r = conn.request("GET", "/api/nolength")
        assert (r.status, r.header("Content-Length"), r.body) == (201, "4", b"made")
        r = conn.request("GET", "/api/empty")
        assert r.status == 204 and r.header("Content-Length") is None
        r = conn.request("HEAD", "/api/hello")
        assert (r.status, r.header("Content-Length"), r.body) == (200, "13", b"")
        r = conn.request("GET", "/api/hello", version="HTTP/1.0")
        assert r.body == b"Hello, world!"
    # HTTP/1.0 without keep-alive: the server closed.


@pytest.mark.timeout(30)
def test_a_large_streamed_response_to_a_slow_reader(raw):
    size = 8 << 20
    with Conn(raw.address) as conn:
        conn.send(b"GET /api/big?size=%d HTTP/1.1\r\nHost: t\r\n\r\n" % size)
        time.sleep(0.5)      # the app must wait for the transport, not buffer 8 MiB
        r = conn.response()
        assert r.chunked and r.complete and len(r.body) == size


@pytest.mark.timeout(30)
def test_trailers_and_pathsend(raw):
    with Conn(raw.address) as conn:
        r = conn.request("GET", "/api/trailers", headers=[("TE", "trailers")])
        assert r.chunked and r.body == b"with trailers"
        r = conn.request("GET", "/api/pathsend")
        assert r.body == (APPS / "asgiapps.py").read_bytes()
        assert r.header("Content-Length") == str(len(r.body))
        r = conn.request("GET", "/api/hello")     # the connection is still good
        assert r.body == b"Hello, world!"


@pytest.mark.timeout(30)
def test_pipelined_requests_answered_in_order(raw):
    with Conn(raw.address) as conn:
        conn.send(b"".join(b"GET /api/echo?n=%d HTTP/1.1\r\nHost: t\r\n\r\n" % n
                           for n in range(20)))
        for n in range(20):
            r = conn.response()
            assert r.json()["query_string"] == f"n={n}"


@pytest.mark.timeout(30)
def test_chunked_request_body_streams_to_the_app(raw):
    body = os.urandom(300_000)
    with Conn(raw.address) as conn:
        conn.send(b"POST /api/echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        for start in range(0, len(body), 70_000):
            piece = body[start:start + 70_000]
            conn.send(b"%x\r\n%s\r\n" % (len(piece), piece))
            time.sleep(0.05)
        conn.send(b"0\r\n\r\n")
        seen = conn.response().json()
    assert seen["body_length"] == len(body)
    assert seen["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert seen["body_messages"] > 1


@pytest.mark.timeout(30)
def test_100_continue_on_the_first_receive(raw):
    with Conn(raw.address) as conn:
        conn.send(b"POST /api/echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
                  b"Expect: 100-continue\r\n\r\n")
        interim = conn.response()
        assert interim.status == 100
        conn.send(b"hello")
        assert conn.response().json()["body_length"] == 5
        # An app that answers without reading: no 100, and the body is never awaited.
        conn.send(b"POST /api/noread HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
                  b"Expect: 100-continue\r\n\r\n")
        r = conn.response()
        assert (r.status, r.body) == (200, b"did not read the body")


@pytest.mark.timeout(30)
def test_app_errors(raw):
    r = httpx.get(url(raw, "/api/error"))
    assert r.status_code == 500
    r = httpx.get(url(raw, "/api/nothing"))
    assert r.status_code == 500
    with Conn(raw.address) as conn:
        conn.send(b"GET /api/error-after-start HTTP/1.1\r\nHost: t\r\n\r\n")
        with pytest.raises((AssertionError, ConnectionResetError, ValueError)):
            r = conn.response()
            assert not r.complete      # cut: never a complete response
    raw.proc.wait_for(r"error in the ASGI app serving \"GET /api/error-after-start")
    assert "RuntimeError: the app failed in the middle of its answer" in raw.log()
    assert httpx.get(url(raw, "/api/hello")).status_code == 200


@pytest.mark.timeout(30)
def test_http_disconnect_when_the_client_goes(raw):
    with Conn(raw.address) as conn:
        conn.send(b"GET /api/disconnect?id=gone1 HTTP/1.1\r\nHost: t\r\n\r\n")
        time.sleep(0.2)
    assert raw.wait_record("gone1", "disconnect")["seen"] == "http.disconnect"


@pytest.mark.timeout(30)
def test_bad_requests_are_refused_by_the_protocol(raw):
    with Conn(raw.address) as conn:
        conn.send(b"GET /api/hello HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n")
        assert conn.response().status == 400
        assert conn.at_eof()


@pytest.mark.timeout(30)
def test_access_log_lines(raw):
    httpx.get(url(raw, "/api/hello"), headers={"User-Agent": "asgi-test"})
    raw.proc.wait_for(r'"GET /api/hello HTTP/1.1" 200 13 "-" "asgi-test"')


@pytest.mark.timeout(30)
def test_client_timeout_is_the_clients_stall_never_the_apps(impatient):
    # The app sleeps 0.8 s before each receive, longer than client_timeout
    # (0.5 s), while the client has sent its whole body (more than the queue
    # holds, BODY_HIGH 256 KiB, so reading pauses): the client is not stalling, it
    # gets a 200.
    body = b"b" * (512 << 10)
    with Conn(impatient.address) as conn:
        r = conn.request("POST", "/lazyread?s=0.8", body=body)
        assert (r.status, r.body) == (200, str(len(body)).encode())
    # A client that stops halfway while the app waits in receive(): 408.
    with Conn(impatient.address) as conn:
        conn.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n" + b"x" * 50)
        assert conn.response().status == 408
        assert conn.at_eof()


# -- FastAPI -----------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_fastapi_json_form_stream_and_state(fast):
    with httpx.Client(base_url=url(fast, ""), timeout=10) as client:
        assert client.get("/items/7", params={"q": "x"}).json() == {"item_id": 7, "q": "x"}
        r = client.post("/json", json={"a": [1, 2]})
        assert r.json() == {"got": {"a": [1, 2]}, "type": "application/json"}
        r = client.post("/form", data={"name": "prefork", "count": "3"})
        assert r.json() == {"name": "prefork", "count": 3}
        state = client.get("/state").json()
        assert state["db"] == "connected" and state["pid"] > 0
        with client.stream("GET", "/stream", params={"n": 4}) as r:
            assert r.headers.get("transfer-encoding") == "chunked"
            assert "".join(r.iter_text()) == "".join(f"line {i}\n" for i in range(4))

        body = os.urandom(2_000_000)

        def pieces():
            for start in range(0, len(body), 100_000):
                yield body[start:start + 100_000]

        r = client.post("/upload", content=pieces())
        assert r.json()["size"] == len(body)
        assert r.json()["sha256"] == hashlib.sha256(body).hexdigest()
        assert client.get("/missing").status_code == 404
