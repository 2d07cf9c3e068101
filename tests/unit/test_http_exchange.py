"""Exchange: a WSGI app's response as bytes, with framing decided as late as possible.

Each test parses a real request with RequestParser, builds the environ the
server would, runs the app through Exchange and reads take_output() the way
the connection does (run, then pump until done).
"""

import io
import sys

import pytest

from prefork.servers.http.environ import base_environ, build_environ
from prefork.servers.http.exchange import Exchange, FileWrapper
from prefork.servers.http.parser import RequestParser

GET = b"GET /path?q=1 HTTP/1.1\r\nHost: example.com\r\n\r\n"
GET10 = b"GET / HTTP/1.0\r\n\r\n"
HIGH = 1024


def parsed(raw: bytes):
    """(request, body) as the connection would hand them over."""
    parser = RequestParser()
    parser.feed(raw)
    request = parser.next_head()
    body = b""
    while parser.in_body:
        data, _ = parser.read_body()
        body += data
    return request, body


def make(app, raw=GET, high_water=HIGH):
    request, body = parsed(raw)
    base = base_environ(("127.0.0.1", 8000), False, "", FileWrapper)
    environ = build_environ(base, request, io.BytesIO(body), len(body), ("10.0.0.9", 40000))
    return Exchange(app, environ, request, high_water)


def drive(exchange, started=False):
    """run(), then pump() until done, as the connection does; all the bytes taken."""
    if not started:
        exchange.run()
    out = exchange.take_output()
    while not exchange.done:
        exchange.pump()
        out += exchange.take_output()
    return out


def respond(app, raw=GET, high_water=HIGH):
    exchange = make(app, raw, high_water)
    out = drive(exchange)
    exchange.release()
    return exchange, Response(out)


class Response:
    def __init__(self, raw: bytes):
        head, _, self.raw_body = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status_line = lines[0]
        self.headers = [tuple(line.split(": ", 1)) for line in lines[1:]]
        self.heads = raw.count(b"HTTP/1.1 ")

    def get(self, name):
        values = [v for n, v in self.headers if n.lower() == name.lower()]
        assert len(values) <= 1, values
        return values[0] if values else None

    @property
    def body(self) -> bytes:
        if self.get("Transfer-Encoding") != "chunked":
            return self.raw_body
        data, rest = b"", self.raw_body
        while True:
            size, _, rest = rest.partition(b"\r\n")
            size = int(size, 16)
            if not size:
                assert rest == b"\r\n", "last chunk without trailers"
                return data
            data, rest = data + rest[:size], rest[size + 2:]


def simple(body=b"hello", status="200 OK", headers=(("Content-Type", "text/plain"),)):
    def app(environ, start_response):
        start_response(status, list(headers))
        return body if isinstance(body, list) else [body]
    return app


# -- framing -----------------------------------------------------------------------

def test_a_body_complete_below_high_water_gets_content_length_in_one_buffer():
    exchange = make(simple([b"hel", b"", b"lo"]))
    exchange.run()
    assert exchange.done
    response = Response(exchange.take_output())
    assert response.status_line == "HTTP/1.1 200 OK"
    assert response.get("Content-Length") == "5" and response.get("Transfer-Encoding") is None
    assert response.body == b"hello" and exchange.keep_alive and exchange.body_bytes == 5
    assert response.get("Connection") is None


def test_a_large_body_without_content_length_is_chunked_for_http11():
    parts = [b"a" * 700, b"b" * 700, b"c" * 10]
    exchange = make(simple(parts))
    exchange.run()
    assert not exchange.done          # stopped at high_water: the socket takes it first
    response = Response(drive(exchange, started=True))
    assert response.get("Transfer-Encoding") == "chunked" and response.get("Content-Length") is None
    assert response.body == b"".join(parts) and response.raw_body.endswith(b"0\r\n\r\n")
    assert exchange.keep_alive


def test_a_large_body_to_http10_is_delimited_by_the_close():
    exchange, response = respond(simple([b"x" * 2000]), GET10)
    assert response.get("Transfer-Encoding") is None and response.get("Content-Length") is None
    assert response.get("Connection") == "close" and response.body == b"x" * 2000
    assert not exchange.keep_alive


def test_http10_keep_alive_gets_content_length_and_says_keep_alive():
    exchange, response = respond(simple(), b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    assert response.get("Connection") == "keep-alive" and response.get("Content-Length") == "5"
    assert exchange.keep_alive


def test_the_apps_content_length_is_kept_and_extra_bytes_are_cut():
    headers = [("Content-Length", "5")]
    exchange, response = respond(simple([b"hello", b" world"], headers=headers))
    assert response.get("Content-Length") == "5" and response.body == b"hello"
    assert exchange.keep_alive
    exchange, response = respond(simple([b"x" * 3000], headers=headers))
    assert response.get("Transfer-Encoding") is None and response.body == b"xxxxx"


def test_fewer_bytes_than_the_apps_content_length_closes_the_connection():
    exchange, response = respond(simple(b"hello", headers=[("Content-Length", "10")]))
    assert response.body == b"hello" and not exchange.keep_alive


def test_head_sends_no_body_but_the_length_get_would_have():
    head = b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n"
    exchange, response = respond(simple(b"hello"), head)
    assert response.get("Content-Length") == "5" and response.raw_body == b""
    assert exchange.keep_alive
    exchange, response = respond(simple(b"", headers=[("Content-Length", "42")]), head)
    assert response.get("Content-Length") == "42" and response.raw_body == b""
    assert exchange.keep_alive
    exchange, response = respond(simple([b"x" * 3000]), head)
    assert response.raw_body == b"" and response.get("Transfer-Encoding") is None


@pytest.mark.parametrize("status", ["204 No Content", "304 Not Modified"])
def test_204_and_304_send_no_body(status):
    exchange, response = respond(simple(b"ignored", status=status, headers=[]))
    assert response.status_line == "HTTP/1.1 " + status and response.raw_body == b""
    assert response.get("Content-Length") is None and response.get("Transfer-Encoding") is None
    assert exchange.keep_alive


def test_no_content_length_on_a_204_even_from_the_app():
    _, response = respond(simple(b"", status="204 No Content", headers=[("Content-Length", "0")]))
    assert response.get("Content-Length") is None


def test_hop_by_hop_headers_from_the_app_are_dropped():
    hop = [("Connection", "keep-alive"), ("Keep-Alive", "timeout=5"), ("TE", "trailers"),
           ("Transfer-Encoding", "chunked"), ("Upgrade", "h2c"), ("Trailer", "X"),
           ("Proxy-Authenticate", "Basic"), ("proxy-authorization", "x")]
    app = simple(b"hi", headers=[("X-A", "1")] + hop + [("x-b", "2")])
    exchange, response = respond(app)
    names = [name.lower() for name, _ in response.headers]
    assert not set(names) & {name.lower() for name, _ in hop}
    assert names[:2] == ["x-a", "x-b"] and response.get("Content-Length") == "2"
    assert response.body == b"hi" and exchange.keep_alive


def test_connection_close_from_the_app_is_honoured():
    exchange, response = respond(simple(headers=[("Connection", "Close")]))
    assert response.get("Connection") == "close" and not exchange.keep_alive


def test_date_and_server_are_added_unless_the_app_set_them():
    _, response = respond(simple())
    assert response.get("Server") == "prefork" and response.get("Date").endswith(" GMT")
    app_date = "Thu, 01 Jan 1970 00:00:00 GMT"
    _, response = respond(simple(headers=[("server", "mine"), ("DATE", app_date)]))
    assert response.get("Server") == "mine" and response.get("Date") == app_date


def test_start_response_may_be_called_during_the_first_iteration():
    def app(environ, start_response):
        start_response("201 Created", [("Location", "/x")])
        yield b"made"
    _, response = respond(app)
    assert response.status_line == "HTTP/1.1 201 Created" and response.body == b"made"


def test_write_callable_comes_before_the_iterable():
    def app(environ, start_response):
        write = start_response("200 OK", [])
        write(b"one ")
        write(b"two ")
        return [b"three"]
    _, response = respond(app)
    assert response.body == b"one two three" and response.get("Content-Length") == "13"


# -- errors ------------------------------------------------------------------------

def assert_500(exchange, response):
    assert response.status_line == "HTTP/1.1 500 Internal Server Error"
    assert response.get("Connection") == "close" and response.heads == 1
    assert exchange.done and not exchange.keep_alive and not exchange.aborted


def test_start_response_twice_without_exc_info_is_500():
    def app(environ, start_response):
        start_response("200 OK", [])
        start_response("404 Not Found", [])
        return [b"x"]
    assert_500(*respond(app))


def test_exc_info_before_the_head_is_committed_replaces_the_status():
    def app(environ, start_response):
        start_response("200 OK", [("X-First", "1")])
        try:
            raise KeyError("boom")
        except KeyError:
            start_response("503 Service Unavailable", [("X-Second", "1")], sys.exc_info())
        return [b"sorry"]
    exchange, response = respond(app)
    assert response.status_line == "HTTP/1.1 503 Service Unavailable"
    assert response.get("X-First") is None and response.get("X-Second") == "1"
    assert response.body == b"sorry" and exchange.keep_alive


def test_exc_info_after_the_head_is_committed_reraises_the_apps_error():
    seen = []

    def app(environ, start_response):
        write = start_response("200 OK", [])
        write(b"x" * HIGH)            # reaches high_water: the head is committed
        error = ValueError("late")
        try:
            raise error
        except ValueError:
            try:
                start_response("500 Oops", [], sys.exc_info())
            except ValueError as again:
                seen.append(again is error)
                raise
        return []
    exchange, response = respond(app)
    assert seen == [True]
    assert_500(exchange, response)    # nothing had left yet, so a clean 500 replaces it


class Tracked:
    """An iterable result that records close() and can fail mid-way."""

    def __init__(self, parts, fail_at=None):
        self.parts, self.fail_at, self.closed = parts, fail_at, 0

    def __iter__(self):
        for index, part in enumerate(self.parts):
            if index == self.fail_at:
                raise RuntimeError("mid-iteration")
            yield part

    def close(self):
        self.closed += 1


def tracked_app(result, status="200 OK"):
    def app(environ, start_response):
        start_response(status, [])
        return result
    return app


def test_close_is_called_once_on_success():
    result = Tracked([b"a", b"b"])
    exchange, response = respond(tracked_app(result))
    exchange.release()
    assert result.closed == 1 and response.body == b"ab"


def test_an_app_failing_before_output_gets_a_500_and_its_result_closed():
    result = Tracked([b"a", b"b"], fail_at=1)
    exchange, response = respond(tracked_app(result))
    assert_500(exchange, response)
    assert result.closed == 1


def test_an_app_raising_at_the_call_gets_a_500():
    def app(environ, start_response):
        raise LookupError("at once")
    assert_500(*respond(app))


def test_an_app_failing_after_output_left_aborts_the_connection():
    result = Tracked([b"a" * 2000, b"b"], fail_at=1)
    exchange = make(tracked_app(result))
    exchange.run()
    first = exchange.take_output()          # the connection sends it: flushed
    assert first.startswith(b"HTTP/1.1 200 OK") and not exchange.done
    exchange.pump()
    assert exchange.aborted and exchange.done and not exchange.keep_alive
    assert result.closed == 1 and b"500" not in exchange.take_output()


def test_yielding_str_is_500():
    assert_500(*respond(simple(["text"])))


def test_write_of_str_is_500():
    def app(environ, start_response):
        start_response("200 OK", [])("text")
        return []
    assert_500(*respond(app))


@pytest.mark.parametrize("status, headers", [("200", []), ("OK 200", []), ("200 OK\r\nX: y", []),
                                             ("200 OK", [("Bad Name", "v")]),
                                             ("200 OK", [("X", "a\r\nInjected: 1")]),
                                             ("200 OK", [("X", "\u20ac")]),
                                             ("200 OK", [("Content-Length", "-1")])])
def test_malformed_status_or_headers_from_the_app_are_500(status, headers):
    assert_500(*respond(simple(b"x", status=status, headers=headers)))


def test_no_start_response_at_all_is_500():
    assert_500(*respond(lambda environ, start_response: [b"x"]))
