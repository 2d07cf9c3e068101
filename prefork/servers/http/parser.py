"""A strict HTTP/1.1 request parser: bytes in, requests and body chunks out.

Sans-IO, in the manner of h11: :class:`RequestParser` never touches a
socket.  The connection's protocol (:mod:`.protocol`) calls
:meth:`~RequestParser.feed` with what it received, then
:meth:`~RequestParser.next_head` until a :class:`Request` comes out, then
:meth:`~RequestParser.read_body` until it says the body is complete; the
parser is then ready for the next pipelined request.  It reports what a
request asks for (``keep_alive``, ``expect_continue``); what the
connection does about it is the protocol's decision.

Anything that could let two parsers disagree about where a message ends
(request smuggling) is a :class:`ProtocolError` carrying the status to
answer, after which the connection must be closed: Content-Length with
Transfer-Encoding, differing or malformed Content-Length, bad chunk framing,
bare CR or LF, control characters, obsolete line folding, bad field names.
Any method that is an RFC 9110 token is accepted; the application decides
whether it knows it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, List, Optional, Tuple

from .grammar import (CHUNK_LINE, CHUNK_SIZE_LINE, CONTROLS_MARKED, CTL, FORBIDDEN_TRAILERS,
                      FRAMING_FIELDS, HOSTS, REQUEST_LINE, TOKEN_RE, TOKENS, ProtocolError,
                      check_target_form, parse_field)


@dataclass(frozen=True)
class Limits:
    """Sizes a request may not exceed, and the status each excess gets."""

    request_line: int = 8190     # 414
    header_count: int = 100      # 431
    header_size: int = 8190      # one field line; 431
    body_size: int = 64 << 20    # 413


class Request:
    """One parsed request head.  Strings are ISO-8859-1 decodings of the bytes (as WSGI wants)."""

    __slots__ = ("method", "target", "version", "headers", "keep_alive", "chunked",
                 "content_length", "expect_continue", "upgrade")

    def __init__(self, method: str, target: str, version: str,
                 headers: List[Tuple[str, str]]) -> None:
        self.method = method
        self.target = target
        self.version = version          # "HTTP/1.1" or "HTTP/1.0"
        self.headers = headers          # [(name as sent, value without OWS)]
        self.keep_alive = version == "HTTP/1.1"
        self.chunked = False
        self.content_length = 0
        self.expect_continue = False
        self.upgrade = method == "CONNECT"

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.target} {self.version}>"


# The parser's states (Final, one per line: compiled code inlines them).
HEAD: Final = 0
BODY_LENGTH: Final = 1
CHUNK_SIZE: Final = 2
CHUNK_DATA: Final = 3
CHUNK_CRLF: Final = 4
TRAILERS: Final = 5


class RequestParser:
    """Parses the requests of one connection, pipelined or not."""

    def __init__(self, limits: Limits = Limits()) -> None:
        self.limits = limits
        # Immutable bytes, not a bytearray: the usual request arrives whole in
        # one recv and is parsed from that very object, with no copy.
        self._buf = b""
        self._state = HEAD
        self._remaining = 0          # body bytes still expected (length or current chunk)
        self._received = 0           # body bytes so far, for the size limit
        self._trailer_count = 0

    def feed(self, data: bytes) -> None:
        self._buf = self._buf + data if self._buf else data

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def take_buffered(self) -> bytes:
        """The bytes after the last parsed head, taken out (an upgraded connection's own)."""
        data, self._buf = self._buf, b""
        return data

    @property
    def in_body(self) -> bool:
        return self._state != HEAD

    # -- the head ----------------------------------------------------------

    def next_head(self) -> Optional[Request]:
        """The next request head, or None until more bytes arrive."""
        assert self._state == HEAD, "read_body() first"
        buf = self._buf
        if not buf:
            return None
        if buf[:2] == b"\r\n":
            # RFC 9112 2.2: ignore empty lines before a request-line.
            skip = 2
            while buf.startswith(b"\r\n", skip):
                skip += 2
            self._buf = buf = buf[skip:]
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            self._check_partial_head()
            return None
        # The head up to and including its last field line's CRLF.
        raw = buf[:end + 2]
        self._buf = buf[end + 4:]
        request = self._plain_head(raw) or self._checked_head(raw.decode("latin-1"))
        self._frame(request)
        return request

    def _check_partial_head(self) -> None:
        """Refuse an unfinished head early, so a client cannot make us buffer without end."""
        limits, buf = self.limits, self._buf
        line_end = buf.find(b"\n")
        line = buf if line_end < 0 else buf[:line_end + 1]
        # The request line as far as it came, its CRLF (or a final CR) not counted.
        body = line[:-2] if line.endswith(b"\r\n") else line[:-1] if line.endswith(b"\r") else line
        if b"\r" in body or (line_end >= 0 and not line.endswith(b"\r\n")):
            raise ProtocolError(400, "bare CR or LF in the request line")
        if len(body) > limits.request_line:
            raise ProtocolError(414, "request line too long")
        # The longest head the limits allow is the request line, its fields, each
        # with its CRLF, and the empty line: until then it may still be whole.
        if len(buf) >= limits.request_line + limits.header_count * (limits.header_size + 2) + 4:
            raise ProtocolError(431, "request header block too large")

    def _plain_head(self, raw: bytes) -> Optional[Request]:
        """The request, if ``raw`` is a usual head within the limits; else None.

        Whatever it accepts, :meth:`_checked_head` accepts the same way (a
        property the tests check); it is only faster.  One C pass over the
        bytes rules out every control character, so what is left to check
        is the shape: CRLF pairs, an origin-form HTTP/1.x request line,
        field names that are tokens.  Values need no pattern then: stripped
        of their spaces and tabs, they are well-formed.
        """
        if raw.translate(CONTROLS_MARKED) != raw:
            return None                 # a control character: the checks name it
        head = raw.decode("latin-1")
        lines = head.split("\r\n")
        crlf = len(lines) - 1
        if head.count("\r") != crlf or head.count("\n") != crlf:
            return None                 # a bare CR or LF
        lines.pop()                     # the block ends with CRLF: an empty last item
        request_line = lines[0]
        limits = self.limits
        if len(request_line) > limits.request_line or crlf - 1 > limits.header_count \
                or len(head) - len(request_line) - 2 > limits.header_size:
            return None                 # then a line might be too long
        parts = request_line.split(" ")
        if len(parts) != 3:
            return None
        method, target, version = parts
        if (version != "HTTP/1.1" and version != "HTTP/1.0") or target[:1] != "/" \
                or "\t" in target or method == "CONNECT" or not TOKENS.fits(method):
            return None
        headers: List[Tuple[str, str]] = []
        for i in range(1, crlf):
            name, colon, value = lines[i].partition(":")
            if not colon or not TOKENS.fits(name):
                return None
            headers.append((name, value.strip(" \t")))
        return Request(method, target, "HTTP/1.0" if version == "HTTP/1.0" else "HTTP/1.1",
                       headers)

    def _checked_head(self, head: str) -> Request:
        limits = self.limits
        # Control characters cannot pass the request-line and field-line
        # patterns; a CR or LF outside a CRLF is all that is left to catch.
        crlf = head.count("\r\n")
        if head.count("\r") != crlf or head.count("\n") != crlf:
            raise ProtocolError(400, "bare CR or bare LF in the head")
        line_end = head.find("\r\n")
        if line_end > limits.request_line:
            raise ProtocolError(414, "request line too long")
        match = REQUEST_LINE.fullmatch(head, 0, line_end)
        if not match:
            raise ProtocolError(400, "malformed request line")
        method, target, major, minor = match.groups()
        if major != "1":
            raise ProtocolError(505, f"HTTP/{major}.{minor} is not supported")
        if target[0] != "/" or method == "CONNECT":
            check_target_form(method, target)
        block = head[line_end + 2:]
        lines = block.split("\r\n")
        lines.pop()                     # the block ends with CRLF: an empty last item
        if len(lines) > limits.header_count:
            raise ProtocolError(431, "too many header fields")
        if len(block) > limits.header_size and max(map(len, lines)) > limits.header_size:
            raise ProtocolError(431, "header field too large")
        if CTL.search(block):
            raise ProtocolError(400, "control character in a header field")
        headers = []
        for line in lines:
            name, colon, value = line.partition(":")
            # A name seen valid before needs no pattern; an obs-fold line or one
            # with space before the colon never has a valid name.
            if not colon or not TOKENS.fits(name):
                parse_field(line)      # raises, saying why
                raise ProtocolError(400, "invalid header field line")
            headers.append((name, value.strip(" \t")))
        # RFC 9110 2.5: a higher 1.x minor version is processed as 1.1.
        return Request(method, target, "HTTP/1.0" if minor == "0" else "HTTP/1.1", headers)

    def _frame(self, request: Request) -> None:
        """Decide how the body is delimited (RFC 9112 6.3) and the connection's fate."""
        lengths: List[str] = []
        codings: List[str] = []
        connection = ""
        hosts = 0
        for name, value in request.headers:
            lower = name.lower()
            if lower not in FRAMING_FIELDS:
                continue
            if lower == "host":
                hosts += 1
                if hosts > 1 or not HOSTS.fits(value):
                    raise ProtocolError(400, "repeated or malformed Host")
            elif lower == "content-length":
                lengths.append(value)
            elif lower == "transfer-encoding":
                codings += [c.strip().lower() for c in value.split(",")]
            elif lower == "connection":
                connection += "," + value.lower()
            elif lower == "expect":
                if value.lower() != "100-continue":
                    raise ProtocolError(417, "only 'Expect: 100-continue' is supported")
                request.expect_continue = request.version == "HTTP/1.1"
            else:   # upgrade
                request.upgrade = True
        if connection:
            tokens = [c.strip() for c in connection.split(",")]
            if "close" in tokens:
                request.keep_alive = False
            elif "keep-alive" in tokens:
                request.keep_alive = True
        if codings:
            if lengths:
                raise ProtocolError(400, "both Content-Length and Transfer-Encoding")
            if request.version == "HTTP/1.0":
                raise ProtocolError(400, "Transfer-Encoding in an HTTP/1.0 request")
            if not all(TOKEN_RE.fullmatch(c) for c in codings):
                raise ProtocolError(400, "malformed Transfer-Encoding")
            if codings[-1] != "chunked" or codings.count("chunked") > 1:
                # RFC 9112 6.3: the body length cannot be known; must be 400.
                raise ProtocolError(400, "chunked is not the final transfer coding, once")
            if len(codings) > 1:
                raise ProtocolError(501, f"transfer coding {codings[0]!r} not implemented")
            request.chunked = True
            self._state, self._remaining = CHUNK_SIZE, 0
        elif lengths:
            if len(lengths) > 1 or not lengths[0].isdigit() or not lengths[0].isascii():
                raise ProtocolError(400, "malformed or repeated Content-Length")
            digits = lengths[0].lstrip("0")
            # Compare lengths first: int() of thousands of digits is slow or refused.
            if len(digits) > len(str(self.limits.body_size)) or int(digits or "0") > \
                    self.limits.body_size:
                raise ProtocolError(413, "request body too large")
            length = int(digits or "0")
            if length > self.limits.body_size:
                raise ProtocolError(413, "request body too large")
            request.content_length = length
            if length:
                self._state, self._remaining = BODY_LENGTH, length
        if not (request.chunked or request.content_length):
            request.expect_continue = False
        self._received = 0

    # -- the body ----------------------------------------------------------

    def read_body(self) -> Tuple[bytes, bool]:
        """Body bytes available now, and whether the body is complete.

        Call until it returns ``done``; with nothing buffered it returns
        ``(b"", False)`` and the caller waits for more data.
        """
        out = []
        while self._state != HEAD:
            state = self._state
            buf = self._buf
            if state == BODY_LENGTH or state == CHUNK_DATA:
                if not buf:
                    break
                take = min(len(buf), self._remaining)
                out.append(buf[:take])
                self._buf = buf[take:]
                self._remaining -= take
                if self._remaining:
                    break
                self._state = HEAD if state == BODY_LENGTH else CHUNK_CRLF
            elif state == CHUNK_SIZE:
                if not self._chunk_size():
                    break
            elif state == CHUNK_CRLF:
                if len(buf) < 2:
                    break
                if buf[:2] != b"\r\n":
                    raise ProtocolError(400, "chunk data not followed by CRLF")
                self._buf = buf[2:]
                self._state = CHUNK_SIZE
            elif not self._trailer_line():
                break
        return b"".join(out), self._state == HEAD

    def _chunk_size(self) -> bool:
        buf = self._buf
        end = buf.find(b"\r\n")
        if end < 0:
            # A line at the limit may be buffered with the CR of its CRLF.
            if len(buf) > CHUNK_LINE + 1 or b"\n" in buf:
                raise ProtocolError(400, "bad chunk size line")
            return False
        if end > CHUNK_LINE:     # the same limit whether the line came whole or in pieces
            raise ProtocolError(400, "chunk size line too long")
        line = buf[:end]
        self._buf = buf[end + 2:]
        match = CHUNK_SIZE_LINE.fullmatch(line)
        if not match:
            raise ProtocolError(400, "bad chunk size")
        size = int(match.group(1), 16)
        self._received += size
        if self._received > self.limits.body_size:
            raise ProtocolError(413, "request body too large")
        if size:
            self._state, self._remaining = CHUNK_DATA, size
        else:
            self._state, self._trailer_count = TRAILERS, 0
        return True

    def _trailer_line(self) -> bool:
        buf = self._buf
        end = buf.find(b"\r\n")
        if end < 0:
            if len(buf) > self.limits.header_size + 1:    # + the CR of its CRLF
                raise ProtocolError(431, "trailer field too large")
            return False
        line = buf[:end].decode("latin-1")
        self._buf = buf[end + 2:]
        if not line:
            self._state = HEAD
            return True
        self._trailer_count += 1
        if self._trailer_count > self.limits.header_count or len(line) > self.limits.header_size:
            raise ProtocolError(431, "trailer section too large")
        if CTL.search(line) or "\r" in line or "\n" in line:
            raise ProtocolError(400, "control character in a trailer field")
        name, _ = parse_field(line)
        if name.lower() in FORBIDDEN_TRAILERS:
            raise ProtocolError(400, f"{name} is not allowed in trailers")
        return True
