"""Hostile bytes: the HTTP parser and connection fuzzed, and a live server under fuzzed requests.

Promise (issue 7): random and mutated requests never kill a worker, every
reply is well-formed HTTP, and a request means the same whether it arrives
whole or in pieces.

- Sans-IO, no sockets (hypothesis): random bytes and mutations of valid
  requests (CRLF/LF/CR swaps, duplicated lines, chunk-size and number
  mutations, NULs and other control bytes, obs-fold, Content-Length /
  Transfer-Encoding combinations, pipelining, small limits) go through
  ``RequestParser`` and through the real ``HttpConnection`` driven by a fake
  socket, loop and server.  Only ``ProtocolError`` may come out of the
  parser, its status is a 4xx/5xx that ``error_response`` can write, the
  connection's output parses as a sequence of well-formed responses, and
  the outcome is the same whole or split at arbitrary byte boundaries.
- Live (``-w 2``, the echo app): generated requests over raw sockets, each
  exchange's bytes must parse as well-formed HTTP/1.x and give the statuses
  the sans-IO connection gives for the same bytes; afterwards the same
  workers are alive and the log has no crash.
- Live, the corpora of ../shared/conformance: each case sent whole and
  sent in pieces with small random delays gets the same statuses.

The parser-level replay of the corpora split at random boundaries is in
tests/unit/test_http_conformance_parser.py and is not repeated here.
"""

from __future__ import annotations

import base64
import json
import random
import re
import socket
import sys
import time
from collections import deque
from types import SimpleNamespace
from typing import List, Optional, Sequence, Tuple

import pytest
from hypothesis import HealthCheck, Phase, example, given, note, settings
from hypothesis import strategies as st
from hypothesis.errors import HypothesisException

from conftest import LONG, seconds
from harness import APPS, REPO

from prefork.servers.http.connection import HttpConnection
from prefork.servers.http.environ import base_environ
from prefork.servers.http.exchange import FileWrapper
from prefork.servers.http.parser import Limits, ProtocolError, RequestParser
from prefork.servers.http.response import error_response
from prefork.servers.wsgi import WSGIServer

sys.path.insert(0, str(APPS))
import wsgiapps  # noqa: E402  (the app the live server runs)

CORPUS = REPO.parent / "shared" / "conformance"

# Examples per property: the quick form is CI's, the long one run.py's.
UNIT_EXAMPLES = 5000 if LONG else 300
LIVE_EXAMPLES = 3000 if LONG else 300


def fuzz_settings(examples: int) -> settings:
    return settings(max_examples=examples, deadline=None, database=None,
                    phases=(Phase.explicit, Phase.generate, Phase.shrink),
                    suppress_health_check=list(HealthCheck))


# == generating requests =====================================================================

TOKEN_ALPHABET = "!#$%&'*+.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-"
tokens = st.text(TOKEN_ALPHABET, min_size=1, max_size=10)

methods = st.one_of(
    st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE",
                     "CONNECT", "PURGE", "MKCOLA", "M-SEARCH", "PRI", "get"]),
    tokens)
targets = st.one_of(
    st.sampled_from(["/", "/a/b?x=1&y=%20", "*", "http://example.com:8080/x?y",
                     "https://u@h/p", "example.com:443", "/caf\xe9", "/%00", "//x", "/?#f",
                     "/a%2fb", "/" + "p" * 60]),
    st.text("".join(map(chr, range(0x21, 0x7f))), max_size=30).map(lambda s: "/" + s))
versions = st.one_of(st.just("HTTP/1.1"), st.just("HTTP/1.1"),
                     st.sampled_from(["HTTP/1.0", "HTTP/1.2", "HTTP/2.0", "HTTP/0.9",
                                      "http/1.1", "HTTP/01.1", "HTTP/1.1 ", "HTTP/1"]))
field_names = st.one_of(
    st.sampled_from(["Host", "Content-Type", "Connection", "Expect", "Upgrade", "Cookie",
                     "Accept", "User-Agent", "X-Forwarded-For", "Transfer_Encoding",
                     "Content_Length", "Referer", "TE", "Trailer"]),
    tokens)
field_values = st.text("".join(chr(c) for c in range(0x20, 0x100) if c != 0x7f), max_size=24)
framing_lines = st.sampled_from([
    "Connection: close", "Connection: keep-alive", "Connection: Keep-Alive, Upgrade",
    "Expect: 100-continue", "Expect: 200-ok", "Upgrade: h2c", "Host: second",
    "Content-Length: 5", "Content-Length: 0", "Content-Length: 00005", "Content-Length: 5, 5",
    "Content-Length: -1", "Content-Length: +5", "Content-Length: 0x5", "Content-Length: 5 5",
    "Content-Length: 99999999999999999999999999", "Content-Length: \xb2",
    "Transfer-Encoding: chunked", "Transfer-Encoding: CHUNKED", "Transfer-Encoding: gzip, chunked",
    "Transfer-Encoding: chunked, chunked", "Transfer-Encoding: identity",
    "Transfer-Encoding: chunked, gzip", "Transfer-Encoding: ,chunked", "Transfer-Encoding:",
    "Transfer-Encoding : chunked", "Transfer-Encoding:\x0bchunked", " Transfer-Encoding: chunked",
    "Transfer-Encoding: chunked\r\n x", "X: a\r\n\tfolded", "Trailer: X"])

chunk_extensions = st.sampled_from([b"", b"", b";a", b";a=b", b';a="q\\"x"', b" ;a", b";", b";a=",
                                    b";a=b" * 300])
chunk_data = st.lists(st.binary(min_size=1, max_size=40), max_size=4)
plain_fields = st.tuples(field_names, field_values)
trailer_fields = st.lists(plain_fields, max_size=2)
head_fields = st.lists(st.one_of(plain_fields.map(": ".join), plain_fields.map(": ".join),
                                 plain_fields.map(": ".join), framing_lines), max_size=5)
hosts = st.integers(0, 5).flatmap(
    lambda n: st.sampled_from(["a", "example.com:80", "[::1]:8", ""]) if n else st.none())
body_kinds = st.sampled_from(["none", "none", "length", "chunked"])
length_bodies = st.binary(max_size=60)


@st.composite
def chunked_bodies(draw) -> bytes:
    out = b""
    for data in draw(chunk_data):
        out += b"%x%s\r\n%s\r\n" % (len(data), draw(chunk_extensions), data)
    out += b"0" + draw(chunk_extensions) + b"\r\n"
    for name, value in draw(trailer_fields):
        out += f"{name}: {value}\r\n".encode("latin-1")
    return out + b"\r\n"


@st.composite
def requests(draw) -> bytes:
    """One request, mostly valid: a method, target, fields and a framed body."""
    lines = [f"{draw(methods)} {draw(targets)} {draw(versions)}"]
    host = draw(hosts)
    if host is not None:
        lines.append("Host: " + host)
    lines += draw(head_fields)
    kind = draw(body_kinds)
    body = b""
    if kind == "length":
        body = draw(length_bodies)
        lines.append(f"Content-Length: {len(body)}")
    elif kind == "chunked":
        body = draw(chunked_bodies())
        lines.append("Transfer-Encoding: chunked")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


pipelines = st.lists(requests(), min_size=1, max_size=3).map(b"".join)
leading = st.sampled_from([b"", b"", b"", b"\r\n", b"\r\n\r\n", b"\n", b" "])

INSERTS = [b"\x00", b"\x7f", b"\xff", b" ", b"\t", b":", b"\r\n ", b"\r\n\t", b"\r\n", b"\r",
           b"\n", b"\r\n\r\n", b";", b"\x0b", b"\x0c", b"0", b"-", b",", b'"', b"\x80"]
CHUNK_SIZES = [b"F" * 17, b"FFFFFFFFFFFFFFFF", b"-1", b"0x5", b" 5", b"5 ", b"", b"g",
               b"0" * 20 + b"5", b"5;" + b"e" * 1100, b"1" * 1100, b"fffffff"]
NUMBERS = [b"9" * 30, b"0" * 20 + b"1", b"18446744073709551616", b"-0", b"1e3", b"0",
           b"67108865", b"\xb2"]
CRLF_SWAPS = [b"\n", b"\r", b"\r\r\n", b"\n\r", b"", b"\r\n\r\n", b" \r\n", b"\r\n\x00"]

mutations = st.one_of(
    st.tuples(st.just("crlf"), st.floats(0, 1), st.sampled_from(CRLF_SWAPS)),
    st.tuples(st.just("dup_line"), st.floats(0, 1), st.just(b"")),
    st.tuples(st.just("insert"), st.floats(0, 1),
              st.one_of(st.sampled_from(INSERTS), st.binary(min_size=1, max_size=4))),
    st.tuples(st.just("field"), st.floats(0, 1), framing_lines.map(lambda s: s.encode("latin-1"))),
    st.tuples(st.just("chunk_size"), st.floats(0, 1), st.sampled_from(CHUNK_SIZES)),
    st.tuples(st.just("number"), st.floats(0, 1), st.sampled_from(NUMBERS)),
    st.tuples(st.just("delete"), st.floats(0, 1), st.integers(1, 8).map(lambda n: b"x" * n)),
    st.tuples(st.just("flip"), st.floats(0, 1), st.binary(min_size=1, max_size=1)),
    st.tuples(st.just("truncate"), st.floats(0, 1), st.just(b"")),
    st.tuples(st.just("long_field"), st.floats(0, 1), st.integers(1, 400).map(lambda n: b"v" * n)),
)


def _nth(positions: Sequence[int], frac: float) -> Optional[int]:
    if not positions:
        return None
    return positions[min(int(frac * len(positions)), len(positions) - 1)]


def mutate(raw: bytes, op: Tuple[str, float, bytes]) -> bytes:
    kind, frac, payload = op
    at = min(int(frac * (len(raw) + 1)), len(raw))
    if kind == "crlf":
        i = _nth([m.start() for m in re.finditer(rb"\r\n", raw)], frac)
        return raw if i is None else raw[:i] + payload + raw[i + 2:]
    if kind == "dup_line":
        lines = [m.span() for m in re.finditer(rb"[^\r\n]+\r\n", raw)]
        span = _nth(lines, frac)
        return raw if span is None else raw[:span[1]] + raw[span[0]:span[1]] + raw[span[1]:]
    if kind in ("field", "long_field"):
        line = payload if kind == "field" else b"X-Long: " + payload
        i = _nth([m.end() for m in re.finditer(rb"\r\n", raw)], frac)
        return raw if i is None else raw[:i] + line + b"\r\n" + raw[i:]
    if kind == "chunk_size":
        sizes = [m.span(1) for m in re.finditer(rb"\r\n([0-9A-Fa-f]+)(?:;[^\r\n]*)?\r\n", raw)]
        span = _nth(sizes, frac)
        return raw if span is None else raw[:span[0]] + payload + raw[span[1]:]
    if kind == "number":
        span = _nth([m.span() for m in re.finditer(rb"[0-9]+", raw)], frac)
        return raw if span is None else raw[:span[0]] + payload + raw[span[1]:]
    if kind == "insert":
        return raw[:at] + payload + raw[at:]
    if kind == "delete":
        return raw[:at] + raw[at + len(payload):]
    if kind == "flip":
        return raw[:at] + payload + raw[at + 1:]
    assert kind == "truncate"
    return raw[:at]


overs = st.sampled_from([0, 0, 0, -1, 1])
field_counts = st.integers(0, 40)
with_extension = st.booleans()


def at_limits(draw, limits: Limits) -> bytes:
    """A request whose request line, fields, trailers or chunk-size lines are at (or
    one byte over) the limits: where an early check and the final one may disagree."""
    over = draw(overs)
    line = b"GET /" + b"a" * max(0, limits.request_line - 14 + over) + b" HTTP/1.1"
    size = limits.header_size + over

    def field(name: bytes) -> bytes:
        return name + b": " + b"v" * max(0, size - len(name) - 2) + b"\r\n"

    count = min(draw(field_counts), limits.header_count)
    fields = b"".join(field(b"X%d" % n) for n in range(count))
    if not draw(st.booleans()):
        return line + b"\r\n" + fields + b"\r\n"
    extension = b";" + b"e" * (1024 - 2 + over) if draw(with_extension) else b""
    return (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n" + fields + b"\r\n"
            + b"1" + extension + b"\r\nx\r\n0\r\n" + field(b"T") + b"\r\n")


small_limits = st.one_of(
    st.just(Limits()), st.just(Limits()),
    st.builds(Limits, request_line=st.integers(16, 120), header_count=st.integers(1, 8),
              header_size=st.integers(8, 120), body_size=st.integers(0, 200)))
choices = st.integers(0, 9)
random_bytes = st.one_of(st.binary(max_size=300),
                         st.binary(max_size=300).map(lambda b: b"GET / HTTP/1.1\r\n" + b))
mutated = st.integers(0, 2)
mutation_lists = st.lists(mutations, min_size=1, max_size=4)


def draw_hostile(draw, limits: Optional[Limits] = None) -> bytes:
    """Random bytes, or valid pipelined requests with a few mutations (with
    ``limits``: sometimes a request at them)."""
    choice = draw(choices)
    if choice == 0:
        return draw(random_bytes)
    if choice == 1 and limits is not None and limits.header_size * limits.header_count < 4096:
        raw = at_limits(draw, limits)
    else:
        raw = draw(leading) + draw(pipelines)
    if draw(mutated):
        for op in draw(mutation_lists):
            raw = mutate(raw, op)
    return raw


@st.composite
def hostile(draw, limits: Optional[Limits] = None) -> bytes:
    return draw_hostile(draw, limits)


@st.composite
def limited(draw) -> Tuple[bytes, Limits]:
    """(hostile bytes, the parser limits they meet)."""
    limits = draw(small_limits)
    return draw_hostile(draw, limits), limits


bytewise = st.integers(0, 7)
cut_points = st.lists(st.integers(0, 1 << 16), max_size=8)


@st.composite
def cuts(draw, raw: bytes) -> List[bytes]:
    """``raw`` in pieces: split at drawn byte offsets, or byte by byte."""
    if 0 < len(raw) <= 4096 and draw(bytewise) == 0:
        return [raw[i:i + 1] for i in range(len(raw))]
    points = sorted({p % (len(raw) + 1) for p in draw(cut_points)})
    edges = [0] + points + [len(raw)]
    return [raw[a:b] for a, b in zip(edges, edges[1:]) if b > a]


# == the parser, sans IO ======================================================================

def parse_events(pieces: Sequence[bytes], limits: Limits) -> tuple:
    """Feed ``pieces`` as connection.py does; (requests, error status, waiting)."""
    parser = RequestParser(limits)
    done_requests = []
    request, body = None, b""
    try:
        for piece in pieces:
            parser.feed(piece)
            while True:
                if request is None:
                    request = parser.next_head()
                    if request is None:
                        break
                    body = b""
                if parser.in_body:
                    data, finished = parser.read_body()
                    body += data
                    if not finished:
                        break
                done_requests.append((request.method, request.target, request.version,
                                      request.headers, request.keep_alive, request.chunked,
                                      request.content_length, request.expect_continue,
                                      request.upgrade, body))
                request = None
    except ProtocolError as exc:
        assert 400 <= exc.status < 600, exc
        assert error_response(exc.status).startswith(b"HTTP/1.1 %d " % exc.status)
        return done_requests, exc.status, False
    return done_requests, None, request is not None or parser.buffered > 0


def same_events(whole: tuple, split: tuple) -> bool:
    """Whole and split agree; the one tolerance: a head over a size limit is refused
    (414/431) as soon as the limit is passed, before the rest of it is judged,
    where the whole head may first break another rule (a different 4xx)."""
    if whole == split:
        return True
    return (whole[0] == split[0] and whole[1] is not None and split[1] in (414, 431)
            and whole[1] >= 400)


def check_parser(raw: bytes, pieces: List[bytes], limits: Limits) -> tuple:
    whole = parse_events([raw], limits)
    split = parse_events(pieces, limits)
    if not same_events(whole, split):
        offsets = [sum(len(p) for p in pieces[:n]) for n in range(1, len(pieces))]
        raise AssertionError(f"whole: {whole[1:]} after {len(whole[0])} request(s); split at "
                             f"{offsets if len(offsets) < 20 else 'every byte'}: {split[1:]} "
                             f"after {len(split[0])} request(s); {limits}; raw {raw[:400]!r}")
    return whole


# Regressions (found with this fuzzer; each depended on where the bytes were cut): a
# head exactly at the limits, a trailer line at header_size, a chunk-size line over 1024.
AT_LIMITS = Limits(request_line=64, header_count=2, header_size=64, body_size=100)
HEAD_AT_LIMITS = (b"GET /" + b"a" * 50 + b" HTTP/1.1\r\nHost: " + b"h" * 58 + b"\r\nX: "
                  + b"x" * 61 + b"\r\n\r\n")
TRAILER_AT_LIMIT = (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nT: "
                    + b"v" * 61 + b"\r\n\r\n")
LONG_CHUNK_LINE = (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5"
                   + b";a=b" * 300 + b"\r\nhello\r\n0\r\n\r\n")


@pytest.mark.timeout(900 if LONG else 120)
def test_parser_raises_only_protocol_errors_and_ignores_where_the_bytes_are_cut(figures):
    counts = {"examples": 0, "requests": 0, "refused": 0}

    @fuzz_settings(UNIT_EXAMPLES)
    @given(st.data(), limited())
    @example(None, (HEAD_AT_LIMITS, AT_LIMITS))
    @example(None, (TRAILER_AT_LIMIT, AT_LIMITS))
    @example(None, (LONG_CHUNK_LINE, Limits()))
    def one(data, case):
        raw, limits = case
        if data is None:    # the explicit regressions: every cut
            pieces_list = [[raw[:i], raw[i:]] for i in range(1, len(raw))]
        else:
            pieces_list = [data.draw(cuts(raw), label="pieces")]
        for pieces in pieces_list:
            whole = check_parser(raw, pieces, limits)
        counts["examples"] += 1
        counts["requests"] += len(whole[0])
        counts["refused"] += whole[1] is not None

    one()
    figures(scenario="parser, hostile bytes whole vs split", **counts, unexpected_exceptions=0)


@pytest.mark.parametrize("raw, limits", [(HEAD_AT_LIMITS, AT_LIMITS),
                                         (TRAILER_AT_LIMIT, AT_LIMITS),
                                         (LONG_CHUNK_LINE, Limits())],
                         ids=["head at the limits", "trailer at header_size",
                              "chunk line over 1024"])
def test_split_regressions(raw, limits):
    whole = parse_events([raw], limits)
    for i in range(1, len(raw)):
        assert parse_events([raw[:i], raw[i:]], limits) == whole, i
    if raw is LONG_CHUNK_LINE:
        assert whole[1] == 400          # the size line is refused however it arrives
    else:
        assert whole[1] is None and len(whole[0]) == 1   # at the limit is still accepted


# == the connection, sans IO ==================================================================

class FakeSocket:
    """A client socket as the connection sees it: one piece per recv, then EOF."""

    def __init__(self, pieces: Sequence[bytes], send_cap: int, stall: bool) -> None:
        self.incoming = deque(pieces)
        self.send_cap = send_cap
        self.stall = stall          # after the pieces: nothing (until tick), not EOF
        self.sent = bytearray()
        self.shut_wr = False
        self.closed = False

    def recv(self, size: int) -> bytes:
        assert not self.closed, "recv on a closed socket"
        if self.incoming:
            piece = self.incoming.popleft()
            if len(piece) > size:
                self.incoming.appendleft(piece[size:])
                piece = piece[:size]
            return piece
        if self.stall:
            raise BlockingIOError
        return b""

    def send(self, data) -> int:
        assert not self.closed, "send on a closed socket"
        assert not self.shut_wr, "send after shutdown(SHUT_WR)"
        n = min(len(data), self.send_cap)
        self.sent += bytes(data[:n])
        return n

    def shutdown(self, how: int) -> None:
        assert how == socket.SHUT_WR
        self.shut_wr = True

    def close(self) -> None:
        self.closed = True

    def fileno(self) -> int:
        return -1


class FakeSelector:
    def __init__(self) -> None:
        self.keys = {}

    def register(self, sock, events, data) -> None:
        assert sock not in self.keys, "registered twice"
        assert events
        self.keys[sock] = events

    def modify(self, sock, events, data) -> None:
        assert sock in self.keys, "modify of an unregistered socket"
        self.keys[sock] = events

    def unregister(self, sock) -> None:
        del self.keys[sock]


class FakeLoop:
    """The worker loop's side: a sync dispatcher that runs each job at once."""

    multithread = False
    inflight = None

    def __init__(self) -> None:
        self.selector = FakeSelector()
        self.connections = set()
        self.jobs = 0

    def park(self, connection) -> None:
        self.connections.add(connection)

    def forget(self, connection) -> None:
        self.connections.discard(connection)

    def run_job(self, job, on_done=None, counts=True, what=None) -> None:
        if what is not None:
            assert isinstance(what(), str)
        self.jobs += 1
        job()
        if on_done is not None:
            on_done()


def fake_server(limits: Limits, calls: list) -> WSGIServer:
    """A WSGIServer without a listener, serving the echo app the live tests run."""

    def app(environ, start_response):
        calls.append(environ["REQUEST_METHOD"])
        return wsgiapps.echo(environ, start_response)

    server = WSGIServer.__new__(WSGIServer)
    server.app = app
    server.limits = limits
    server.header_timeout = 10.0
    server.client_timeout = 30.0
    server.keepalive = 5.0
    server.body_buffer_size = 64
    server.high_water = 256 * 1024
    server.access_log = None
    server._base = base_environ(("127.0.0.1", 8000), False, "", FileWrapper)
    rejected = []
    server.log_rejection = lambda connection, status: rejected.append(status)
    server.rejected = rejected
    return server


class Conversation(SimpleNamespace):
    """sent: bytes out; methods: what reached the app; rejected: server-made statuses."""


def converse(pieces: Sequence[bytes], limits: Limits = Limits(), send_cap: int = 1 << 30,
             stall: bool = False) -> Conversation:
    sock = FakeSocket(pieces, send_cap, stall)
    loop, calls = FakeLoop(), []
    server = fake_server(limits, calls)
    conn = HttpConnection(sock, ("10.0.0.1", 40000), server, loop)
    ticked = False
    for _ in range(100000):
        if conn.closed:
            break
        if conn._events == 0:
            raise AssertionError(f"open in state {conn.state!r} but waits for nothing")
        if stall and not sock.incoming and conn.state != "write" and not ticked:
            conn.tick(time.monotonic() + 3600)    # the client went quiet: deadlines pass
            ticked, sock.stall = True, False      # ...and then it hangs up
            continue
        conn._on_ready()
    else:
        raise AssertionError(f"no end after 100000 steps, state {conn.state!r}")
    assert sock.closed and not loop.connections and not loop.selector.keys
    return Conversation(sent=bytes(sock.sent), methods=calls, rejected=server.rejected,
                        shut=sock.shut_wr)


# == reading replies strictly =================================================================

STATUS_LINE = re.compile(rb"HTTP/1\.[01] ([1-5][0-9][0-9]) [\t\x20-\x7e\x80-\xff]*\r\n")
FIELD_LINE = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+:[\t\x20-\x7e\x80-\xff]*\r\n")
CHUNK_LINE = re.compile(rb"([0-9a-fA-F]{1,16})(;[^\r\n]*)?\r\n")


class Malformed(AssertionError):
    pass


def read_replies(data: bytes, methods: Sequence[str], closed: bool = True) -> List[int]:
    """Statuses of the responses in ``data`` (interim 1xx left out), checking each.

    ``methods``: the requests the app answered, in order; a final response past
    them is one the server made (4xx/5xx), which must say Connection: close and
    be the last.  Framing: Content-Length, chunked, or the close.
    """
    pos, statuses = 0, []

    def fail(why: str) -> None:
        raise Malformed(f"{why} at byte {pos}: {data[max(0, pos - 40):pos + 80]!r}")

    while pos < len(data):
        m = STATUS_LINE.match(data, pos)
        if not m:
            fail("malformed status line")
        status, pos = int(m.group(1)), m.end()
        fields = []
        while not data.startswith(b"\r\n", pos):
            f = FIELD_LINE.match(data, pos)
            if not f:
                fail("malformed field line or unterminated head")
            name, _, value = f.group(0)[:-2].partition(b":")
            fields.append((name.lower(), value.strip(b" \t")))
            pos = f.end()
        pos += 2
        names = [n for n, _ in fields]
        get = dict(fields).get
        if status < 200:
            if b"content-length" in names or b"transfer-encoding" in names:
                fail("framing on an interim response")
            continue
        served = len(statuses) < len(methods)
        method = methods[len(statuses)] if served else None
        statuses.append(status)
        if not served and not (400 <= status < 600 and b"close" in get(b"connection", b"")):
            fail(f"a server-made {status} without Connection: close")
        if names.count(b"content-length") > 1:
            fail("repeated Content-Length")
        chunked = get(b"transfer-encoding", b"").lower() == b"chunked"
        if chunked and b"content-length" in names:
            fail("Content-Length with Transfer-Encoding")
        if method == "HEAD" or status in (204, 304):
            pass
        elif chunked:
            while True:
                c = CHUNK_LINE.match(data, pos)
                if not c:
                    fail("malformed chunk size line")
                size, pos = int(c.group(1), 16), c.end()
                if not size:
                    break
                if len(data) < pos + size + 2 or data[pos + size:pos + size + 2] != b"\r\n":
                    fail("chunk cut short or not followed by CRLF")
                pos += size + 2
            while not data.startswith(b"\r\n", pos):     # trailers
                f = FIELD_LINE.match(data, pos)
                if not f:
                    fail("malformed trailer or no last CRLF")
                pos = f.end()
            pos += 2
        elif b"content-length" in names:
            length = get(b"content-length")
            if not length.isdigit():
                fail("malformed Content-Length")
            if len(data) < pos + int(length):
                fail("body shorter than its Content-Length")
            pos += int(length)
        else:
            if not closed:
                fail("a close-delimited body on a connection that stays open")
            pos = len(data)
        if (b"close" in get(b"connection", b"").lower() or not served) and pos != len(data):
            fail("bytes after a response that closes the connection")
    if len(statuses) < len(methods):
        raise Malformed(f"{len(methods)} requests reached the app but {len(statuses)} "
                        f"responses came back: {data[-300:]!r}")
    return statuses


def check_conversation(c: Conversation) -> List[int]:
    statuses = read_replies(c.sent, c.methods)
    if c.rejected:
        assert len(c.rejected) == 1, c.rejected
        assert statuses and statuses[-1] == c.rejected[0], (statuses, c.rejected)
        assert 400 <= c.rejected[0] < 600 and c.shut, c.rejected
    return statuses


def same_statuses(whole: List[int], split: List[int], rejected: List[int]) -> bool:
    """The statuses of the bytes sent whole and in pieces agree, with same_events()'s
    tolerance: the last, server-made refusal may be the 414/431 of a size limit
    passed before the head ended."""
    if whole == split:
        return True
    return bool(rejected) and whole[:-1] == split[:-1] and len(whole) == len(split) \
        and split[-1] in (414, 431)


def comparable(sent: bytes) -> bytes:
    """A conversation's bytes without what may differ: the Date, interim 100 Continue."""
    sent = re.sub(rb"\r\nDate: [^\r]*", b"", sent)
    return sent.replace(b"HTTP/1.1 100 Continue\r\n\r\n", b"")


@pytest.mark.timeout(900 if LONG else 120)
def test_connection_answers_well_formed_and_ignores_where_the_bytes_are_cut(figures):
    counts = {"examples": 0, "replies": 0, "refused": 0, "app_calls": 0}

    @fuzz_settings(UNIT_EXAMPLES)
    @given(st.data(), limited(), st.sampled_from([1 << 30, 1 << 30, 7, 1]), st.booleans())
    @example(None, (HEAD_AT_LIMITS, AT_LIMITS), 1 << 30, False)
    def one(data, case, send_cap, stall):
        raw, limits = case
        if data is None:
            pieces = [raw[:-1], raw[-1:]]
        else:
            pieces = data.draw(cuts(raw), label="pieces")
        whole = converse([raw] if raw else [], limits, send_cap, stall)
        split = converse(pieces, limits, send_cap, stall)
        note(f"whole: app saw {whole.methods}, rejected {whole.rejected}: {whole.sent[:300]!r}")
        note(f"split: app saw {split.methods}, rejected {split.rejected}: {split.sent[:300]!r}")
        statuses = check_conversation(whole)
        split_statuses = check_conversation(split)
        assert split.methods == whole.methods
        assert same_statuses(statuses, split_statuses, whole.rejected), (statuses, split_statuses)
        if statuses == split_statuses:
            assert comparable(split.sent) == comparable(whole.sent)
        counts["examples"] += 1
        counts["replies"] += len(statuses)
        counts["refused"] += bool(whole.rejected)
        counts["app_calls"] += len(whole.methods)

    one()
    figures(scenario="HttpConnection (fake socket), whole vs split", **counts,
            malformed_replies=0, unexpected_exceptions=0)


def test_a_request_waiting_in_the_socket_is_served_not_reset_at_the_keepalive_deadline():
    # Regression: the sweep closed an idle keep-alive connection whose deadline
    # passed while the worker could not read (a sync worker busy with a longer
    # request), with the client's next request unread in the socket: a reset.
    sock = FakeSocket([b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n"], 1 << 30, stall=True)
    loop, calls = FakeLoop(), []
    conn = HttpConnection(sock, ("10.0.0.1", 40000), fake_server(Limits(), calls), loop)
    assert calls == ["GET"] and conn.state == "head" and not conn.closed
    sock.incoming.append(b"GET /2 HTTP/1.1\r\nHost: a\r\n\r\n")   # sent in time, not read yet
    conn.tick(time.monotonic() + 3600)                               # the deadline has passed
    assert calls == ["GET", "GET"] and not conn.closed
    assert read_replies(bytes(sock.sent), calls, closed=False) == [200, 200]
    conn.tick(time.monotonic() + 3600)     # truly idle now: closed, nothing more sent
    assert conn.closed and read_replies(bytes(sock.sent), calls) == [200, 200]


# == live: a real server under fuzzed requests ================================================

# Small limits, so that the limit paths (414, 431, 413) are reachable with
# small requests; the sans-IO oracle uses the same.
LIVE_LIMITS = Limits(request_line=256, header_count=12, header_size=128, body_size=1024)
LIVE_ARGS = ("--limit-request-line", "256", "--limit-request-fields", "12",
             "--limit-request-field-size", "128", "--max-body-size", "1024")
CRASH_WORDS = ("crashed", "exited unexpectedly", "Traceback", "was killed by")


def exchange(address: tuple, pieces: Sequence[bytes], delays: Sequence[float] = (),
             timeout: float = 20.0) -> Tuple[bytes, bool]:
    """Send ``pieces`` (sleeping ``delays`` between them), half-close, read to the close.

    Returns (bytes received, whether the connection was reset)."""
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            for n, piece in enumerate(pieces):
                if n and n - 1 < len(delays) and delays[n - 1]:
                    time.sleep(delays[n - 1])
                sock.sendall(piece)
            sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass     # refused early: what came back still counts
        chunks, reset = [], False
        while True:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                reset = True
                break
            except socket.timeout:
                raise AssertionError(f"no close within {timeout} s; got {b''.join(chunks)!r}")
            if not data:
                break
            chunks.append(data)
    return b"".join(chunks), reset


def wsgi_echo_server(prefork_server, *extra: str):
    server = prefork_server("serve", "wsgiapps:echo", "-b", "127.0.0.1:0", "-w", "2", *extra)
    server.wait_ready(timeout=60)
    workers = server.wait_workers(lambda p: len(p) == 2, timeout=60)
    return server, workers


def assert_no_worker_died(server, workers) -> None:
    log = server.log()
    assert not [w for w in CRASH_WORDS if w in log], log[-4000:]
    assert server.live_workers() == workers, (workers, server.worker_pids(), log[-3000:])


@pytest.mark.integration
@pytest.mark.timeout(seconds(90, 900))
def test_live_server_answers_fuzzed_requests_well_formed_and_no_worker_dies(
        prefork_server, figures):
    server, workers = wsgi_echo_server(prefork_server, *LIVE_ARGS)
    address = server.address
    budget = seconds(20, 400)
    started = time.monotonic()
    stop_at = started + budget
    counts = {"examples": 0, "replies": 0, "refused": 0, "no_reply": 0, "resets": 0,
              "over_budget": 0}
    failing = []

    @fuzz_settings(LIVE_EXAMPLES)
    @given(st.data(), hostile(LIVE_LIMITS))
    def one(data, raw):
        if not failing and time.monotonic() > stop_at:
            counts["over_budget"] += 1
            return      # the time budget is spent; hypothesis finishes its count
        try:
            pieces = data.draw(cuts(raw), label="pieces") if raw else [b""]
            oracle = converse([raw] if raw else [], LIVE_LIMITS)
            got, reset = exchange(address, pieces)
            note(f"sent {raw[:300]!r}; got {got[:400]!r}; oracle {oracle.sent[:300]!r}")
            statuses = read_replies(got, oracle.methods)
            assert same_statuses(check_conversation(oracle), statuses, oracle.rejected)
            counts["examples"] += 1
            counts["last_example_at"] = round(time.monotonic() - started, 1)
            counts["replies"] += len(statuses)
            counts["refused"] += bool(oracle.rejected)
            counts["no_reply"] += not statuses
            counts["resets"] += reset
        except HypothesisException:
            raise       # hypothesis's own control flow (an overrun draw): not a failure
        except Exception:
            failing.append(True)    # a real failure: replay and shrink it, whatever the time
            raise

    one()
    assert_no_worker_died(server, workers)
    assert counts["examples"] >= min(50, LIVE_EXAMPLES), counts   # the fuzzer really ran
    figures(scenario="fuzzed requests against -w 2", **counts, workers_died=0,
            seconds=round(time.monotonic() - started, 1))


# == live: the corpora, whole and in pieces ===================================================

def corpus_cases() -> List[dict]:
    if not CORPUS.is_dir():
        return []
    cases = []
    for case in json.loads((CORPUS / "gunicorn-requests.json").read_text())["cases"]:
        if not case["config"] and not case["name"].split("/", 1)[1].startswith("pp_"):
            cases.append(case)
    for case in json.loads((CORPUS / "llhttp-requests.json").read_text())["cases"]:
        if case.get("mode") == "strict":
            cases.append(case)
    return cases


@pytest.mark.integration
@pytest.mark.timeout(seconds(90, 900))
def test_live_corpora_split_at_random_boundaries_answer_as_whole(prefork_server, figures):
    cases = corpus_cases()
    if not cases:
        pytest.skip(f"no conformance corpora at {CORPUS}")
    server, workers = wsgi_echo_server(prefork_server)
    rng = random.Random(0 if not LONG else None)
    rounds = 3 if LONG else 1
    replays, replies, differing = 0, 0, []
    for case in cases:
        raw = base64.b64decode(case["raw_b64"])
        oracle = converse([raw], Limits())
        whole, _ = exchange(server.address, [raw])
        want = read_replies(whole, oracle.methods)
        assert want == check_conversation(oracle), case["name"]
        for _ in range(rounds):
            points = sorted(rng.sample(range(1, len(raw)), min(len(raw) - 1, rng.randint(1, 4))))
            edges = [0] + points + [len(raw)]
            pieces = [raw[a:b] for a, b in zip(edges, edges[1:])]
            delays = [rng.uniform(0, 0.005) for _ in pieces]
            got, _ = exchange(server.address, pieces, delays)
            statuses = read_replies(got, oracle.methods)
            if not same_statuses(want, statuses, oracle.rejected):
                differing.append((case["name"], points, want, statuses))
            replays += 1
            replies += len(statuses)
    assert not differing, differing[:10]
    assert_no_worker_died(server, workers)
    figures(scenario="corpora split with delays vs whole", cases=len(cases), split_replays=replays,
            replies_checked=replies, differing=0, workers_died=0)
