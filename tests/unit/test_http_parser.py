"""RequestParser: request lines, fields, framing, the strictness rules and the limits.

Every status asserted here is the one the connection answers before closing,
so each strictness rule is pinned to its RFC 9112 / 9110 section.
"""

from dataclasses import dataclass, field
from typing import List, Optional

import pytest

from prefork.servers.http.parser import Limits, ProtocolError, RequestParser


@dataclass
class Parsed:
    requests: List[tuple] = field(default_factory=list)   # (Request, body)
    status: Optional[int] = None
    waiting: bool = False          # no error, bytes of an unfinished message buffered


def parse(data: bytes, limits: Limits = Limits(), bytewise: bool = False) -> Parsed:
    parser = RequestParser(limits)
    out = Parsed()
    request, body = None, b""
    pieces = [data[i:i + 1] for i in range(len(data))] if bytewise else [data]
    try:
        for piece in pieces:
            parser.feed(piece)
            while True:
                if request is None:
                    request = parser.next_head()
                    if request is None:
                        break
                    body = b""
                    if not parser.in_body:
                        out.requests.append((request, body))
                        request = None
                        continue
                data_, done = parser.read_body()
                body += data_
                if not done:
                    break
                out.requests.append((request, body))
                request = None
    except ProtocolError as exc:
        out.status = exc.status
        return out
    out.waiting = request is not None or parser.buffered > 0
    return out


def one(data: bytes, **kw):
    out = parse(data, **kw)
    assert out.status is None and not out.waiting and len(out.requests) == 1, out
    return out.requests[0]


def status(data: bytes, **kw) -> Optional[int]:
    return parse(data, **kw).status


def get(target=b"/", version=b"HTTP/1.1", headers=b"Host: a\r\n", method=b"GET") -> bytes:
    return method + b" " + target + b" " + version + b"\r\n" + headers + b"\r\n"


# -- request line ------------------------------------------------------------------

@pytest.mark.parametrize("target", [b"/", b"/a/b?x=1&y=%20", b"/p;a=b?q#frag",
                                    b"http://example.com:8080/x?y", b"/caf\xe9"])
def test_request_target_is_kept_raw_as_latin1(target):
    request, _ = one(get(target))
    assert request.target == target.decode("latin-1")


def test_authority_form_connect_and_asterisk_form_options():
    request, _ = one(get(b"example.com:443", method=b"CONNECT"))
    assert (request.method, request.target, request.upgrade) == ("CONNECT", "example.com:443", True)
    request, _ = one(get(b"*", method=b"OPTIONS"))
    assert (request.method, request.target, request.upgrade) == ("OPTIONS", "*", False)


@pytest.mark.parametrize("method", [b"GET", b"PURGE", b"MKCOLA", b"M-SEARCH", b"get",
                                    b"X_CUSTOM", b"!#$%&'*+.^_`|~09az-", b"BREW"])
def test_any_rfc9110_token_is_a_method(method):
    request, _ = one(get(method=method))
    assert request.method == method.decode()


@pytest.mark.parametrize("line", [
    b"GE(T / HTTP/1.1", b"GE\"T / HTTP/1.1", b" / HTTP/1.1", b"GET  / HTTP/1.1",
    b"GET / HTTP/1.1 ", b"GET /  HTTP/1.1", b"GET /", b"GET / http/1.1", b"GET / HTTP/1",
    b"GET / HTTP/11", b"GET / HTTP/1.1.1", b"GET /a b HTTP/1.1", b"GET\t/ HTTP/1.1",
    b"GET /\x7f HTTP/1.1", b"GET /\x00 HTTP/1.1", b"GET / HTTP/1.1\x00",
])
def test_malformed_request_line_is_400(line):
    assert status(line + b"\r\nHost: a\r\n\r\n") == 400


@pytest.mark.parametrize("version", [b"HTTP/2.0", b"HTTP/0.9", b"HTTP/3.0", b"HTTP/9.9"])
def test_other_major_versions_are_505(version):
    assert status(get(version=version)) == 505


# -- connection persistence (RFC 9112 9.3) -----------------------------------------

@pytest.mark.parametrize("version, headers, keep_alive", [
    (b"HTTP/1.1", b"", True),
    (b"HTTP/1.1", b"Connection: close\r\n", False),
    (b"HTTP/1.1", b"Connection: Close\r\n", False),
    (b"HTTP/1.1", b"Connection: foo, CLOSE\r\n", False),
    (b"HTTP/1.1", b"Connection: keep-alive, Upgrade\r\n", True),
    (b"HTTP/1.1", b"Connection: foo\r\nConnection: close\r\n", False),
    (b"HTTP/1.0", b"", False),
    (b"HTTP/1.0", b"Connection: keep-alive\r\n", True),
    (b"HTTP/1.0", b"Connection: Keep-Alive\r\n", True),
    (b"HTTP/1.0", b"Connection: keep-alive, close\r\n", False),
    (b"HTTP/1.0", b"Connection: closed\r\n", False),
])
def test_keep_alive_follows_the_version_and_connection_tokens(version, headers, keep_alive):
    request, _ = one(get(version=version, headers=headers))
    assert request.keep_alive is keep_alive
    assert request.version == version.decode()


def test_closed_is_not_close():
    request, _ = one(get(headers=b"Connection: closed\r\n"))
    assert request.keep_alive is True


# -- fields --------------------------------------------------------------------------

def test_leading_empty_lines_are_ignored_before_each_request():
    out = parse(b"\r\n\r\n" + get(b"/1") + b"\r\n" + get(b"/2"))
    assert [r.target for r, _ in out.requests] == ["/1", "/2"] and not out.waiting


def test_field_values_lose_ows_but_keep_inner_space_and_obs_text():
    request, _ = one(get(headers=b"A: \t  x  y \t\r\nB:\r\nC:v\r\nD: caf\xe9 \xff\r\nE: a:b\r\n"))
    assert request.headers == [("A", "x  y"), ("B", ""), ("C", "v"), ("D", "caf\xe9 \xff"),
                               ("E", "a:b")]


def test_duplicate_fields_are_kept_in_order_with_their_case():
    request, _ = one(get(headers=b"Cookie: a=1\r\nX-Y: 1\r\ncookie: b=2\r\nx-y: 2\r\n"))
    assert request.headers == [("Cookie", "a=1"), ("X-Y", "1"), ("cookie", "b=2"), ("x-y", "2")]


def test_names_with_underscores_are_tokens_and_kept():
    request, _ = one(get(headers=b"X_Forwarded_For: 1.2.3.4\r\n"))
    assert request.headers == [("X_Forwarded_For", "1.2.3.4")]


@pytest.mark.parametrize("line", [
    b"Host : a", b": a", b"Ho st: a", b"Host", b"H@st: a", b"H\xe9: a", b"\"H\": a",
    b"Host\t: a", b"Ho\x00st: a",
])
def test_invalid_field_names_are_400(line):
    # RFC 9112 5.1: no whitespace between name and colon, MUST 400.
    assert status(b"GET / HTTP/1.1\r\n" + line + b"\r\n\r\n") == 400


@pytest.mark.parametrize("headers", [
    b"A: b\r\n c\r\n", b"A: b\r\n\tc\r\n", b" A: b\r\n", b"\tA: b\r\n",
])
def test_obs_fold_is_400(headers):
    assert status(b"GET / HTTP/1.1\r\nHost: a\r\n" + headers + b"\r\n") == 400


@pytest.mark.parametrize("raw", [
    b"GET / HTTP/1.1\r\nA: b\rc\r\n\r\n",          # bare CR in a value
    b"GET / HTTP/1.1\rA: b\r\n\r\n",               # bare CR ends the request line
    b"GET / HTTP/1.1\r\nA: b\nB: c\r\n\r\n",       # bare LF ends a field line
    b"GET / HTTP/1.1\nHost: a\n\n",                # LF-only message
    b"GET / HTTP/1.1\r\nHost: a\n\r\n\r\n",
    b"GET / HTTP/1.1\r\nA: \x00\r\n\r\n",
    b"GET / HTTP/1.1\r\nA: x\x01y\r\n\r\n",
    b"GET / HTTP/1.1\r\nA: x\x0cy\r\n\r\n",
    b"GET / HTTP/1.1\r\nA: x\x1by\r\n\r\n",
    b"GET / HTTP/1.1\r\nA: x\x7fy\r\n\r\n",
])
def test_bare_cr_bare_lf_and_control_characters_are_400(raw):
    assert status(raw) == 400


def test_htab_inside_a_value_is_allowed():
    request, _ = one(get(headers=b"A: x\ty\r\n"))
    assert request.headers[-1] == ("A", "x\ty")


# -- pipelining and bodies -------------------------------------------------------

def test_pipelined_requests_in_one_feed_come_out_in_order_with_their_bodies():
    raw = (get(b"/a")
           + b"POST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"
           + b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
             b"3\r\nabc\r\n0\r\n\r\n"
           + get(b"/d", headers=b"Host: a\r\nConnection: close\r\n"))
    out = parse(raw)
    assert out.status is None and not out.waiting
    assert [(r.method, r.target, b) for r, b in out.requests] == [
        ("GET", "/a", b""), ("POST", "/b", b"hello"), ("POST", "/c", b"abc"), ("GET", "/d", b"")]
    assert [r.keep_alive for r, _ in out.requests] == [True, True, True, False]


def test_content_length_body_arrives_in_pieces():
    parser = RequestParser()
    parser.feed(b"PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n0123")
    request = parser.next_head()
    assert (request.content_length, request.chunked, parser.in_body) == (10, False, True)
    assert parser.read_body() == (b"0123", False)
    assert parser.read_body() == (b"", False)
    parser.feed(b"456789GET")
    assert parser.read_body() == (b"456789", True)
    assert not parser.in_body and parser.buffered == 3


def test_content_length_zero_means_no_body():
    parser = RequestParser()
    parser.feed(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n")
    request = parser.next_head()
    assert (request.content_length, parser.in_body) == (0, False)


@pytest.mark.parametrize("chunks, body", [
    (b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", b"hello world"),
    (b"A\r\n0123456789\r\na\r\n0123456789\r\n0\r\n\r\n", b"0123456789" * 2),
    (b"0005\r\nhello\r\n000\r\n\r\n", b"hello"),
    (b"5;name\r\nhello\r\n0;a=b;c=\"q \\\" ;x\"\r\n\r\n", b"hello"),
    (b"5 ; a = b\r\nhello\r\n0\r\n\r\n", b"hello"),
    (b"5\r\nhello\r\n0\r\nX-Sum: 1\r\nX-Other:  two \r\n\r\n", b"hello"),
    (b"0\r\n\r\n", b""),
])
def test_chunked_bodies_with_extensions_and_trailers(chunks, body):
    head = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    out = parse(head + chunks + get(b"/next"))
    assert out.status is None and not out.waiting
    assert [b for _, b in out.requests] == [body, b""]
    assert out.requests[0][0].chunked and out.requests[1][0].target == "/next"


def test_transfer_coding_names_are_case_insensitive():
    request, body = one(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n"
                        b"1\r\nx\r\n0\r\n\r\n")
    assert request.chunked and body == b"x"


CHUNKED = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize("trailer", [b"Content-Length: 5", b"Transfer-Encoding: chunked",
                                     b"host: b", b" X: folded", b"X : y", b"X: a\x00",
                                     b"X: a\nY: b", b"novalue"])
def test_forbidden_or_malformed_trailers_are_400(trailer):
    assert status(CHUNKED + b"0\r\n" + trailer + b"\r\n\r\n") == 400


@pytest.mark.parametrize("chunks", [
    b"g\r\n", b"-5\r\nhello\r\n", b"+5\r\nhello\r\n", b"0x5\r\nhello\r\n", b" 5\r\nhello\r\n",
    b"\r\n", b"5;\r\nhello\r\n", b"5;a=\r\nhello\r\n", b"5;a=\"x\r\nhello\r\n",
    b"5 x\r\nhello\r\n", b"1" * 17 + b"\r\n", b"5\nhello\r\n", b"5\r\r\nhello\r\n",
    b"5\r\nhelloX\r\n0\r\n\r\n", b"5\r\nhello\n0\r\n\r\n", b"5\r\nhello0\r\n\r\n",
    b"3\r\nfoo\r\n\r\n",
])
def test_bad_chunk_framing_is_400(chunks):
    assert status(CHUNKED + chunks) == 400


@pytest.mark.parametrize("line", [b"5 ", b"5\t", b"5;a=b "])
def test_whitespace_after_the_chunk_size_is_400(line):
    # RFC 9112 7.1: chunk = chunk-size [ chunk-ext ] CRLF; BWS only before ';' and '='.
    assert status(CHUNKED + line + b"\r\nhello\r\n0\r\n\r\n") == 400


# -- 100-continue ------------------------------------------------------------------

@pytest.mark.parametrize("raw, flag", [
    (b"PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n", True),
    (b"PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nTransfer-Encoding: chunked\r\n\r\n",
     True),
    (b"PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n", False),
    (b"GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n", False),          # no body
    (b"PUT / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n", False),  # 1.0
])
def test_expect_continue_flag(raw, flag):
    parser = RequestParser()
    parser.feed(raw)
    assert parser.next_head().expect_continue is flag


def test_unknown_expectation_is_417():
    assert status(get(headers=b"Host: a\r\nExpect: teapot\r\n")) == 417
