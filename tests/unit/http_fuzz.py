"""Hostile HTTP bytes, shared by the fuzz tests: hypothesis strategies and a strict reply reader.

``hostile()`` / ``limited()`` draw random bytes or valid pipelined requests
with a few mutations (CRLF/LF/CR swaps, duplicated lines, chunk-size and
number mutations, NULs and other control bytes, obs-fold, Content-Length /
Transfer-Encoding combinations, small limits); ``cuts()`` splits them at
drawn offsets or byte by byte.  ``read_replies()`` reads what a server sent
back and fails on anything that is not well-formed HTTP/1.x.

Used by tests/unit/test_http_protocol_fuzz.py (the sans-IO protocol) and
tests/reliability/test_hostile_bytes.py (the parser, the selector
connection, a live server).
"""

from __future__ import annotations

import re
from typing import List, Optional, Sequence, Tuple

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st

from prefork.servers.http.parser import Limits


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


# Regressions (found with this fuzzer; each depended on where the bytes were cut): a
# head exactly at the limits, a trailer line at header_size, a chunk-size line over 1024.
AT_LIMITS = Limits(request_line=64, header_count=2, header_size=64, body_size=100)
HEAD_AT_LIMITS = (b"GET /" + b"a" * 50 + b" HTTP/1.1\r\nHost: " + b"h" * 58 + b"\r\nX: "
                  + b"x" * 61 + b"\r\n\r\n")
TRAILER_AT_LIMIT = (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nT: "
                    + b"v" * 61 + b"\r\n\r\n")
LONG_CHUNK_LINE = (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5"
                   + b";a=b" * 300 + b"\r\nhello\r\n0\r\n\r\n")


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
