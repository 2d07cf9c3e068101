"""RequestParser: message framing (request smuggling), limits, and feeding in pieces.

Helpers come from test_http_parser.py.
"""

import pytest

from prefork.servers.http.parser import Limits, ProtocolError, RequestParser
from test_http_parser import CHUNKED, get, one, parse, status


def post(headers: bytes, body: bytes = b"", version: bytes = b"HTTP/1.1") -> bytes:
    return b"POST / " + version + b"\r\nHost: a\r\n" + headers + b"\r\n" + body


# -- Content-Length and Transfer-Encoding (RFC 9112 6) ------------------------------

@pytest.mark.parametrize("headers", [
    b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
    b"Transfer-Encoding: chunked\r\nContent-Length: 0\r\n",
])
def test_content_length_with_transfer_encoding_is_400(headers):
    assert status(post(headers, b"5\r\nhello\r\n0\r\n\r\n")) == 400


@pytest.mark.parametrize("headers", [
    b"Content-Length: 5\r\nContent-Length: 5\r\n",       # repeated, equal: may reject
    b"Content-Length: 5\r\nContent-Length: 6\r\n",
    b"Content-Length: 5, 5\r\n", b"Content-Length: 5,6\r\n", b"Content-Length: -5\r\n",
    b"Content-Length: +5\r\n", b"Content-Length: 0x5\r\n", b"Content-Length: 5a\r\n",
    b"Content-Length: 5 5\r\n", b"Content-Length: 5.0\r\n", b"Content-Length:\r\n",
    b"Content-Length: \xb2\r\n",                          # '²'.isdigit() is True
    b"Content-length: 5\r\ncontent-LENGTH: 6\r\n",
])
def test_repeated_differing_or_non_digit_content_length_is_400(headers):
    assert status(post(headers, b"hello")) == 400


def test_content_length_with_leading_zeros_and_ows_is_a_number():
    request, body = one(post(b"Content-Length: \t0005 \r\n", b"hello"))
    assert (request.content_length, body) == (5, b"hello")


@pytest.mark.parametrize("coding", [b"gzip", b"chunked, gzip", b"chunked, chunked", b"identity",
                                    b"pigeons", b"chunkedchunked"])
def test_transfer_encoding_not_ending_in_one_chunked_is_400(coding):
    # RFC 9112 6.3: chunked not final in a request -> MUST 400.
    assert status(post(b"Transfer-Encoding: " + coding + b"\r\n")) == 400


@pytest.mark.parametrize("headers", [
    b"Transfer-Encoding: gzip, chunked\r\n",
    b"Transfer-Encoding: deflate,chunked\r\n",
    b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
])
def test_unknown_coding_before_chunked_is_501(headers):
    # RFC 9112 6.1: a transfer coding the server does not understand SHOULD get 501.
    assert status(post(headers, b"5\r\nhello\r\n0\r\n\r\n")) == 501


def test_transfer_encoding_in_http10_is_400():
    # RFC 9112 6.1: the framing of an HTTP/1.0 message with Transfer-Encoding is faulty.
    assert status(post(b"Transfer-Encoding: chunked\r\n", b"0\r\n\r\n", b"HTTP/1.0")) == 400


# -- limits ----------------------------------------------------------------------

SMALL = Limits(request_line=32, header_count=3, header_size=20, body_size=10)


def line_of(length: int) -> bytes:
    line = b"GET /" + b"a" * (length - len(b"GET / HTTP/1.1")) + b" HTTP/1.1"
    assert len(line) == length
    return line


def test_request_line_at_the_limit_is_served_one_above_is_414():
    assert one(line_of(32) + b"\r\n\r\n", limits=SMALL)
    assert status(line_of(33) + b"\r\n\r\n", limits=SMALL) == 414


def test_long_request_line_is_414_before_it_ends():
    parser = RequestParser(SMALL)
    parser.feed(line_of(40)[:33])
    with pytest.raises(ProtocolError) as err:
        parser.next_head()
    assert err.value.status == 414


def test_request_line_at_the_limit_split_inside_its_crlf():
    parser = RequestParser(SMALL)
    parser.feed(line_of(32) + b"\r")
    assert parser.next_head() is None
    parser.feed(b"\n\r\n")
    assert parser.next_head().target.startswith("/a")


def test_header_count_limit_is_431():
    fields = b"".join(b"F%d: v\r\n" % i for i in range(3))
    assert one(b"GET / HTTP/1.1\r\n" + fields + b"\r\n", limits=SMALL)
    assert status(b"GET / HTTP/1.1\r\n" + fields + b"G: v\r\n\r\n", limits=SMALL) == 431


def test_header_field_size_limit_is_431():
    assert one(b"GET / HTTP/1.1\r\nX: " + b"v" * 17 + b"\r\n\r\n", limits=SMALL)
    assert status(b"GET / HTTP/1.1\r\nX: " + b"v" * 18 + b"\r\n\r\n", limits=SMALL) == 431


def test_a_head_that_never_ends_is_431_once_it_exceeds_every_limit():
    parser = RequestParser(SMALL)
    parser.feed(b"GET / HTTP/1.1\r\nX: " + b"v" * 200)
    with pytest.raises(ProtocolError) as err:
        parser.next_head()
    assert err.value.status == 431


def test_content_length_above_body_size_is_413_before_the_body():
    assert one(post(b"Content-Length: 10\r\n", b"0123456789"), limits=SMALL)
    assert status(post(b"Content-Length: 11\r\n"), limits=SMALL) == 413
    assert status(post(b"Content-Length: 99999999999999999999999\r\n")) == 413


def test_content_length_with_thousands_of_digits_is_refused():
    assert status(post(b"Content-Length: " + b"9" * 5000 + b"\r\n")) in (400, 413)


def test_chunked_total_above_body_size_is_413():
    limits = Limits(body_size=10)
    assert one(CHUNKED + b"5\r\nhello\r\n5\r\nworld\r\n0\r\n\r\n", limits=limits)
    assert status(CHUNKED + b"5\r\nhello\r\n6\r\n", limits=limits) == 413
    assert status(CHUNKED + b"ffffffffffffffff\r\n") == 413


def test_trailer_section_limits_are_431():
    limits = Limits(header_count=3, header_size=30)
    many = b"".join(b"T%d: v\r\n" % i for i in range(4))
    assert one(CHUNKED + b"0\r\n" + many[:-7] + b"\r\n", limits=limits)
    assert status(CHUNKED + b"0\r\n" + many + b"\r\n", limits=limits) == 431
    assert status(CHUNKED + b"0\r\nT: " + b"v" * 30, limits=limits) == 431


# -- feeding in pieces -------------------------------------------------------------

SAMPLES = [
    get(b"/a") + get(b"/b", version=b"HTTP/1.0"),
    b"\r\n" + post(b"Content-Length: 5\r\nExpect: 100-continue\r\n", b"hello") + get(b"/n"),
    CHUNKED + b"5;x=\"y\"\r\nhello\r\n0\r\nT: v\r\n\r\n" + get(b"/after"),
    post(b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n"),
    post(b"Transfer-Encoding: gzip, chunked\r\n"),
    CHUNKED + b"5\r\nhelloXY",
    CHUNKED + b"5\r\nhello\r\n0\r\nHost: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n",
    b"GET / HTTP/1.1\r\nA: b\rc\r\n\r\n",
    b"GET / HTTP/1.1\nHost: a\n\n",
    b"GET / HTTP/2.0\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
    b"PURGE /x HTTP/1.1\r\nHost: a\r\n\r\nMKCOLA /y HTTP/1.1\r\nHost: a\r\n\r\n",
    get(b"/" + b"x" * 9000),
    b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 101 + b"\r\n",
]


@pytest.mark.parametrize("raw", SAMPLES, ids=range(len(SAMPLES)))
def test_byte_by_byte_gives_the_same_result_as_all_at_once(raw):
    whole, split = parse(raw), parse(raw, bytewise=True)
    summary = lambda out: ([(r.method, r.target, r.version, r.headers, r.keep_alive, b)  # noqa
                            for r, b in out.requests], out.status, out.waiting)
    assert summary(split) == summary(whole)


@pytest.mark.parametrize("raw", [b"GET / HTTP/1.1\rX: a\r\n", b"GET / HTTP/1.1\nX: a\r\n"])
def test_bare_cr_or_lf_in_an_unfinished_head_is_refused_however_it_arrives(raw):
    assert status(raw) == status(raw, bytewise=True) == 400


# -- rules RFC 9112 requires that the parser does not enforce yet -------------------

def test_two_host_fields_are_400():
    assert status(get(headers=b"Host: a\r\nHost: b\r\n")) == 400


@pytest.mark.parametrize("method, target", [(b"GET", b"foo/bar"), (b"GET", b"example.com:443"),
                                            (b"GET", b"*"), (b"POST", b"*"),
                                            (b"CONNECT", b"/path")])
def test_request_target_in_the_wrong_form_is_400(method, target):
    assert status(get(target, method=method)) == 400
