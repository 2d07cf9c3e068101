"""Response heads: status lines, header blocks, the Date cache, error replies.

Pure functions over bytes.  A response head and a small body leave in one
``send``; everything here exists to make that one buffer cheaply.
"""

from __future__ import annotations

import time
from email.utils import formatdate
from http import HTTPStatus
from typing import Final, List, Sequence, Tuple

SERVER: Final = b"Server: prefork\r\n"
# Hop-by-hop fields belong to the server's framing, not the application (PEP 3333).
HOP_BY_HOP: Final = frozenset(("connection", "keep-alive", "proxy-authenticate",
                               "proxy-authorization", "te", "trailer", "transfer-encoding",
                               "upgrade"))
NO_BODY_STATUSES: Final = frozenset((204, 304))
PLAIN: Final = "text/plain; charset=utf-8"

# (second, "Date: ...\r\n"): replaced whole, in one assignment, so a pool thread
# never reads a second with another second's line, or a line not yet written.
_date = (0, b"")


def date_header() -> bytes:
    """``Date: ...\\r\\n``, formatted at most once a second."""
    global _date
    now = int(time.time())
    stamp = _date
    if stamp[0] != now:
        stamp = _date = (now, b"Date: " + formatdate(now, usegmt=True).encode() + b"\r\n")
    return stamp[1]


def status_code(status: str) -> int:
    """The numeric code of a WSGI status string such as '200 OK'; ValueError if malformed."""
    if len(status) < 4 or status[3] != " " or not status[:3].isdigit() or status[0] == "0":
        raise ValueError(f"malformed status {status!r}: expected e.g. '200 OK'")
    if "\r" in status or "\n" in status:
        raise ValueError("CR or LF in the status line")
    return int(status[:3])


def check_headers(headers: List[Tuple[str, str]]) -> None:
    """Refuse what would corrupt the response (header injection, non-latin-1)."""
    for item in headers:
        if type(item) is not tuple or len(item) != 2:
            raise TypeError(f"response header {item!r} is not a (name, value) tuple")
        name, value = item
        if type(name) is not str or type(value) is not str:
            raise TypeError(f"response header {item!r} must be a pair of str")
        if not name or ":" in name or any(c in name for c in " \t\r\n") \
                or "\r" in value or "\n" in value:
            raise ValueError(f"invalid response header {item!r}")


def simple_response(status: int, body: bytes, content_type: str = PLAIN,
                    extra: Sequence[Tuple[str, str]] = (), keep_alive: bool = False,
                    head_only: bool = False) -> bytes:
    """A whole response the server writes itself (an error, the metrics page): one buffer."""
    fields = "".join(f"{name}: {value}\r\n" for name, value in extra)
    return (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n".encode() + SERVER
            + date_header() + f"Content-Type: {content_type}\r\n{fields}".encode("latin-1")
            + b"Content-Length: %d\r\n" % len(body)
            + (b"" if keep_alive else b"Connection: close\r\n") + b"\r\n"
            + (b"" if head_only else body))


def error_response(status: int, keep_alive: bool = False) -> bytes:
    """A complete small response for a status the server itself decides (400, 408, 413...)."""
    return simple_response(status, f"{status} {HTTPStatus(status).phrase}\n".encode(),
                           keep_alive=keep_alive)


CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


LAST_CHUNK: Final = b"0\r\n\r\n"
