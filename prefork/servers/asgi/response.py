"""Response heads from ASGI messages: validation and framing, pure functions over bytes.

:func:`parse_start` checks an ``http.response.start`` message once (status,
header names and values: no CR, LF or NUL can reach the wire) and keeps
the app's fields serialized; :func:`frame` decides the framing when the
first body bytes (or the file of a ``pathsend``) come, with the same rules
as the WSGI side (:mod:`..http.exchange`): a response complete in its first
message gets a Content-Length, a longer one without a Content-Length from
the app is chunked (closed-delimited for HTTP/1.0), HEAD, 1xx, 204 and 304
carry no body, and hop-by-hop fields are the server's, except that the
app's ``Connection: close`` is honoured.
"""

from __future__ import annotations

import re
from http import HTTPStatus
from typing import Any, Dict, Iterable, List, NamedTuple, Optional

from ..http.parser import Request
from ..http.response import HOP_BY_HOP, NO_BODY_STATUSES, SERVER, date_header

_NAME = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_BAD_VALUE = re.compile(rb"[\x00\r\n]")
_HOP = frozenset(name.encode() for name in HOP_BY_HOP)
_STATUS_LINES: Dict[int, bytes] = {}


def status_line(code: int) -> bytes:
    line = _STATUS_LINES.get(code)
    if line is None:
        try:
            phrase = HTTPStatus(code).phrase
        except ValueError:
            phrase = ""
        line = _STATUS_LINES[code] = f"HTTP/1.1 {code} {phrase}\r\n".encode("latin-1")
    return line


class Start(NamedTuple):
    """An ``http.response.start``, checked: what the framing needs to know."""

    code: int
    fields: bytes             # the app's field lines, hop-by-hop ones left out
    declared: Optional[int]   # the app's Content-Length
    close: bool               # the app said Connection: close
    has_server: bool
    has_date: bool
    trailers: bool            # trailers will follow the body


def parse_start(message: Dict[str, Any]) -> Start:
    """Check an ``http.response.start`` message; TypeError or ValueError names the problem."""
    code = message.get("status")
    if type(code) is not int or not 100 <= code <= 999:
        raise ValueError(f"http.response.start: bad status {code!r}")
    lines: List[bytes] = []
    declared: Optional[int] = None
    close = has_server = has_date = False
    for item in message.get("headers", ()):
        name, value = item
        if type(name) is not bytes or type(value) is not bytes:
            raise TypeError(f"http.response.start: header {item!r} is not a pair of bytes")
        if not _NAME.match(name) or _BAD_VALUE.search(value):
            raise ValueError(f"http.response.start: invalid header {item!r}")
        lower = name.lower()
        if lower in _HOP:
            if lower == b"connection" and b"close" in value.lower():
                close = True
            continue
        if lower == b"content-length":
            text = value.strip()
            if declared is not None or not text.isdigit():
                raise ValueError(f"http.response.start: bad or repeated Content-Length {value!r}")
            declared = int(text)
            continue       # written by frame(), which may have to leave it out
        if lower == b"server":
            has_server = True
        elif lower == b"date":
            has_date = True
        lines.append(name + b": " + value + b"\r\n")
    return Start(code, b"".join(lines), declared, close, has_server, has_date,
                 bool(message.get("trailers", False)))


class Framing(NamedTuple):
    head: bytes
    no_body: bool
    chunked: bool
    length: Optional[int]     # body bytes to send, when delimited by a length
    keep_alive: bool


def frame(start: Start, request: Request, keep_alive: bool, total: Optional[int]) -> Framing:
    """The head and framing of a response; ``total``: the whole body's size if known now.

    ``keep_alive`` comes from the connection's protocol (what the request
    asked, a graceful stop); the framing can only take it back.
    """
    code = start.code
    head_request = request.method == "HEAD"
    no_body = head_request or code in NO_BODY_STATUSES or code < 200
    if start.close:
        keep_alive = False
    head = [status_line(code), start.fields]
    if not start.has_server:
        head.append(SERVER)
    if not start.has_date:
        head.append(date_header())
    chunked = False
    length: Optional[int] = None
    declared = start.declared
    if code < 200 or code == 204:
        declared = None              # RFC 9110 8.6: never a Content-Length on 1xx or 204
    elif start.trailers and request.version == "HTTP/1.1" and not no_body:
        declared = total = None      # trailers need the chunked coding
    if declared is not None:
        length = declared
        head.append(b"Content-Length: %d\r\n" % declared)
    elif no_body:
        if head_request and total and code not in NO_BODY_STATUSES:
            head.append(b"Content-Length: %d\r\n" % total)
    elif total is not None:
        length = total
        head.append(b"Content-Length: %d\r\n" % total)
    elif request.version == "HTTP/1.1":
        chunked = True
        head.append(b"Transfer-Encoding: chunked\r\n")
    else:
        keep_alive = False           # HTTP/1.0, length unknown: the close delimits it
    if not keep_alive:
        head.append(b"Connection: close\r\n\r\n")
    elif request.version == "HTTP/1.0":
        head.append(b"Connection: keep-alive\r\n\r\n")
    else:
        head.append(b"\r\n")
    return Framing(b"".join(head), no_body, chunked, length, keep_alive)


def trailer_block(fields: Iterable[Any]) -> bytes:
    """The last chunk with trailer fields (RFC 9112 7.1.2), checked as head fields are."""
    lines = [b"0\r\n"]
    for item in fields:
        name, value = item
        if type(name) is not bytes or type(value) is not bytes or not _NAME.match(name) \
                or _BAD_VALUE.search(value):
            raise ValueError(f"http.response.trailers: invalid field {item!r}")
        lines.append(name + b": " + value + b"\r\n")
    lines.append(b"\r\n")
    return b"".join(lines)


def accepts_trailers(request: Request) -> bool:
    """The client said ``TE: trailers`` (RFC 9110 10.1.4); otherwise trailers are dropped."""
    return any(name.lower() == "te" and "trailers" in value.lower()
               for name, value in request.headers)
