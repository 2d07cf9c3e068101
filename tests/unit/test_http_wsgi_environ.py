"""The PEP 3333 side: the environ, wsgi.file_wrapper (sendfile), and wsgiref's validator."""

import io
import sys
import tempfile
import warnings
from wsgiref.validate import validator

import pytest

from prefork.servers.http.environ import base_environ, build_environ
from prefork.servers.http.exchange import FileWrapper
from test_http_exchange import GET, Response, drive, make, parsed, respond


def environ_of(raw: bytes, root_path="", server=("192.0.2.1", 8080), client=("10.0.0.9", 40000),
               multithread=False):
    request, body = parsed(raw)
    base = base_environ(server, multithread, root_path, FileWrapper)
    return build_environ(base, request, io.BytesIO(body), len(body), client)


def req(target=b"/", headers=b"Host: example.com\r\n", method=b"GET") -> bytes:
    return method + b" " + target + b" HTTP/1.1\r\n" + headers + b"\r\n"


# -- environ -------------------------------------------------------------------------

def test_path_info_is_percent_decoded_as_latin1_and_the_query_stays_raw():
    env = environ_of(req(b"/caf%C3%A9/a%2Fb%20c?x=%20y&z=%C3%A9+1"))
    assert env["PATH_INFO"] == "/caf\xc3\xa9/a/b c"
    assert env["QUERY_STRING"] == "x=%20y&z=%C3%A9+1"
    assert env["RAW_URI"] == env["REQUEST_URI"] == "/caf%C3%A9/a%2Fb%20c?x=%20y&z=%C3%A9+1"
    assert environ_of(req(b"/plain"))["QUERY_STRING"] == ""


def test_raw_non_ascii_bytes_in_the_path_arrive_as_latin1():
    assert environ_of(req(b"/caf\xc3\xa9"))["PATH_INFO"] == "/caf\xc3\xa9"


def test_raw_non_ascii_bytes_next_to_a_percent_escape_arrive_as_latin1():
    assert environ_of(req(b"/caf\xc3\xa9%20x"))["PATH_INFO"] == "/caf\xc3\xa9 x"


@pytest.mark.parametrize("target, path, query", [
    (b"http://example.com:8080/p%20q?x=1", "/p q", "x=1"),
    (b"http://example.com", "/", ""),
    (b"https://example.com?x", "/", "x"),
    (b"http://example.com/a?b=http://c/d", "/a", "b=http://c/d"),
])
def test_absolute_form_target_gives_its_path(target, path, query):
    env = environ_of(req(target))
    assert (env["PATH_INFO"], env["QUERY_STRING"]) == (path, query)


def test_absolute_form_authority_overrides_host():
    env = environ_of(req(b"http://real.example:8080/x", b"Host: other.example\r\n"))
    assert env["HTTP_HOST"] == "real.example:8080"


@pytest.mark.parametrize("target, path", [
    (b"/app/x/y", "/x/y"), (b"/app", ""), (b"/app/", "/"), (b"/ap%70/x", "/x"),
])
def test_root_path_is_stripped_into_script_name(target, path):
    env = environ_of(req(target), root_path="/app")
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/app", path)


@pytest.mark.parametrize("target", [b"/application", b"/other"])
def test_a_path_outside_the_root_path_is_not_cut(target):
    # Only PATH_INFO is pinned: what SCRIPT_NAME should say here is a policy choice.
    assert environ_of(req(target), root_path="/app")["PATH_INFO"] == target.decode()


def test_content_type_and_length_lose_the_http_prefix():
    env = environ_of(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Type: text/plain\r\n"
                     b"Content-Length: 5\r\n\r\nhello")
    assert (env["CONTENT_TYPE"], env["CONTENT_LENGTH"]) == ("text/plain", "5")
    assert "HTTP_CONTENT_TYPE" not in env and "HTTP_CONTENT_LENGTH" not in env
    assert env["wsgi.input"].read() == b"hello"
    assert "CONTENT_LENGTH" not in environ_of(req())
    assert environ_of(req(headers=b"Content-Length: 0\r\n"))["CONTENT_LENGTH"] == "0"


def test_a_chunked_body_gets_its_decoded_length():
    env = environ_of(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
    assert env["CONTENT_LENGTH"] == "5" and env["wsgi.input"].read() == b"abcde"
    assert env["HTTP_TRANSFER_ENCODING"] == "chunked"


def test_http_headers_joined_cookies_with_semicolons_and_underscores_dropped():
    env = environ_of(req(headers=b"Host: h\r\nAccept: a\r\naccept: b\r\nCookie: c=1\r\n"
                                 b"X-Forwarded-For: 1.1.1.1\r\nX_Forwarded_For: 6.6.6.6\r\n"
                                 b"cookie: d=2\r\nX-Empty:\r\nX-Forwarded-for: 2.2.2.2\r\n"))
    assert env["HTTP_HOST"] == "h"
    assert env["HTTP_ACCEPT"] == "a, b"
    assert env["HTTP_COOKIE"] == "c=1; d=2"
    assert env["HTTP_X_FORWARDED_FOR"] == "1.1.1.1, 2.2.2.2"
    assert env["HTTP_X_EMPTY"] == ""
    assert not [key for key in env if "6.6.6.6" in str(env[key])]


def test_remote_and_server_addresses():
    env = environ_of(req())
    assert (env["REMOTE_ADDR"], env["REMOTE_PORT"]) == ("10.0.0.9", "40000")
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("192.0.2.1", "8080")
    env = environ_of(req(), server=("::1", 80, 0, 0), client=("::1", 5, 0, 0))
    assert (env["SERVER_NAME"], env["SERVER_PORT"], env["REMOTE_ADDR"]) == ("::1", "80", "::1")
    env = environ_of(req(), server="/run/app.sock", client="")
    assert (env["SERVER_NAME"], env["SERVER_PORT"], env["REMOTE_ADDR"]) == \
        ("/run/app.sock", "", "")
    assert "REMOTE_PORT" not in env


def test_cgi_and_wsgi_keys():
    env = environ_of(req(b"/x", method=b"PURGE"), multithread=True)
    assert env["REQUEST_METHOD"] == "PURGE" and env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["SCRIPT_NAME"] == "" and env["SERVER_SOFTWARE"] == "prefork"
    assert env["wsgi.version"] == (1, 0) and env["wsgi.url_scheme"] == "http"
    assert env["wsgi.multithread"] is True and env["wsgi.multiprocess"] is True
    assert env["wsgi.run_once"] is False and env["wsgi.input_terminated"] is True
    assert env["wsgi.errors"] is sys.stderr and env["wsgi.file_wrapper"] is FileWrapper
    assert isinstance(env["wsgi.input"], io.BytesIO)
    assert environ_of(req(), multithread=False)["wsgi.multithread"] is False


def test_build_environ_leaves_the_base_alone():
    base = base_environ(("h", 1), False, "", FileWrapper)
    snapshot = dict(base)
    request, _ = parsed(req(headers=b"Host: x\r\nCookie: a\r\n"))
    build_environ(base, request, io.BytesIO(), 0, ("c", 2))
    assert base == snapshot


# -- wsgi.file_wrapper -------------------------------------------------------------

@pytest.fixture
def data_file():
    with tempfile.TemporaryFile() as handle:
        handle.write(b"0123456789" * 300)
        handle.seek(0)
        yield handle


def file_app(handle, headers=(), status="200 OK", before=b""):
    def app(environ, start_response):
        write = start_response(status, list(headers))
        if before:
            write(before)
        return environ["wsgi.file_wrapper"](handle, 1000)
    return app


def test_file_wrapper_over_a_real_file_is_sent_with_sendfile(data_file):
    exchange = make(file_app(data_file))
    out = drive(exchange)
    response = Response(out)
    assert exchange.file == (data_file.fileno(), 0, 3000) and exchange.done
    assert response.get("Content-Length") == "3000" and response.raw_body == b""
    assert exchange.keep_alive and exchange.body_bytes == 3000


def test_sendfile_starts_at_the_files_position(data_file):
    data_file.seek(2990)
    exchange = make(file_app(data_file))
    response = Response(drive(exchange))
    assert exchange.file == (data_file.fileno(), 2990, 10)
    assert response.get("Content-Length") == "10"


def test_sendfile_is_capped_by_the_apps_content_length(data_file):
    exchange = make(file_app(data_file, headers=[("Content-Length", "100")]))
    response = Response(drive(exchange))
    assert exchange.file == (data_file.fileno(), 0, 100) and response.get("Content-Length") == "100"


def test_sendfile_shorter_than_the_apps_content_length_closes(data_file):
    exchange = make(file_app(data_file, headers=[("Content-Length", "5000")]))
    drive(exchange)
    assert exchange.file[2] == 3000 and not exchange.keep_alive


def test_head_with_a_file_sends_its_length_and_no_file(data_file):
    exchange = make(file_app(data_file), b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n")
    response = Response(drive(exchange))
    assert exchange.file is None and response.get("Content-Length") == "3000"


def test_file_wrapper_over_bytesio_is_iterated_in_blocks():
    handle = io.BytesIO(b"x" * 2500)
    exchange, response = respond(file_app(handle))
    assert exchange.file is None and response.body == b"x" * 2500
    assert response.get("Transfer-Encoding") == "chunked"
    assert handle.closed      # FileWrapper.close is the file's close


def test_a_small_write_before_a_file_falls_back_to_iteration(data_file):
    exchange, response = respond(file_app(data_file, before=b"head:"))
    assert exchange.file is None and response.body == b"head:" + b"0123456789" * 300


def test_a_large_write_before_a_file_gives_one_head(data_file):
    exchange, response = respond(file_app(data_file, before=b"w" * 2000))
    assert response.heads == 1 and exchange.file is None
    assert response.body == b"w" * 2000 + b"0123456789" * 300


# -- wsgiref.validate --------------------------------------------------------------

@pytest.mark.parametrize("raw", [
    GET,
    b"POST /form?a=1 HTTP/1.1\r\nHost: a\r\nContent-Type: text/plain\r\n"
    b"Content-Length: 11\r\n\r\nhello\nworld",
    b"HEAD / HTTP/1.0\r\n\r\n",
])
def test_a_validated_app_runs_cleanly(raw):
    def app(environ, start_response):
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        environ["wsgi.errors"].write("")
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"")
        return [b"got ", body, b" for ", environ["PATH_INFO"].encode("latin-1")]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        exchange, response = respond(validator(app), raw)
    assert response.status_line == "HTTP/1.1 200 OK" and not exchange.aborted
    if not raw.startswith(b"HEAD"):
        assert response.body.startswith(b"got ")


def test_a_validated_app_iterated_past_high_water_is_closed():
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return iter([b"z" * 700] * 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        exchange, response = respond(validator(app))
    assert response.body == b"z" * 2800
