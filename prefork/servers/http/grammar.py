"""The grammar of an HTTP/1.1 request (RFC 9110, RFC 9112) as patterns and small checks.

What :mod:`.parser` matches heads, fields, chunk lines and targets against,
and :class:`ProtocolError`, what every rule that fails raises.  Kept apart
from the parser's state machine so that the rules can be read, and tested,
one by one.
"""

from __future__ import annotations

import re
from typing import Final, Set, Tuple

TOKEN: Final = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
REQUEST_LINE: Final = re.compile(rf"({TOKEN}) ([^\x00-\x20\x7f]+) HTTP/(\d)\.(\d)")
TOKEN_RE: Final = re.compile(TOKEN)
# Control characters other than HTAB (CR and LF are checked separately).
CTL: Final = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# The same characters as a bytes.translate table that maps each of them to
# another byte and every other byte to itself: a head holds one exactly when
# translating changes it, found in one pass in C.
CONTROLS_MARKED: Final = bytes((byte + 1) % 256 if CTL.match(chr(byte)) else byte
                               for byte in range(256))
CHUNK_SIZE_LINE: Final = re.compile(
    rb"([0-9A-Fa-f]{1,16})((?:[ \t]*;[ \t]*[!#$%&'*+.^_`|~0-9A-Za-z-]+"
    rb"(?:[ \t]*=[ \t]*(?:[!#$%&'*+.^_`|~0-9A-Za-z-]+|\"(?:[^\"\\\x00-\x08"
    rb"\x0a-\x1f\x7f]|\\[\t \x21-\x7e\x80-\xff])*\"))?)*)")
# Host / authority: a reg-name or IPv4 (no delimiters, no spaces) or an IP
# literal, then an optional port (RFC 3986 3.2.2, RFC 9110 7.2).
HOST_PART: Final = r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%\x80-\xff]*)"
HOST: Final = re.compile(rf"{HOST_PART}(?::[0-9]*)?")
AUTHORITY: Final = re.compile(rf"{HOST_PART}:[0-9]+")
# Userinfo is deprecated in http URIs (RFC 9110 4.2.4) but still parsed, as clients send it.
ABSOLUTE: Final = re.compile(rf"[A-Za-z][A-Za-z0-9+.\-]*://(?:[^@/?#\[\]]*@)?{HOST_PART}"
                             rf"(?::[0-9]*)?(?:[/?][^#]*)?")
FRAMING_FIELDS: Final = frozenset(("host", "content-length", "transfer-encoding",
                                   "connection", "expect", "upgrade"))


class Remembered:
    """A pattern check that remembers what passed: clients send the same few
    field names and Host values again and again, and a set lookup is far
    cheaper than a match.  Bounded, so hostile input cannot grow it."""

    def __init__(self, pattern: "re.Pattern[str]", limit: int) -> None:
        self.pattern = pattern
        self.limit = limit
        self.seen: Set[str] = set()

    def fits(self, value: str) -> bool:
        if value in self.seen:
            return True
        if not self.pattern.fullmatch(value):
            return False
        if len(self.seen) < self.limit:
            self.seen.add(value)
        return True


TOKENS: Final = Remembered(TOKEN_RE, 4096)
HOSTS: Final = Remembered(HOST, 1024)


FORBIDDEN_TRAILERS: Final = frozenset(("content-length", "transfer-encoding", "host"))
CHUNK_LINE: Final = 1024       # longest chunk-size line (size and extensions), CRLF not counted


class ProtocolError(Exception):
    """The request cannot be served: answer ``status`` and close the connection."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


def check_target_form(method: str, target: str) -> None:
    """RFC 9112 3.2: which request-target form goes with which method."""
    if target[0] == "/":
        if method == "CONNECT":
            raise ProtocolError(400, "CONNECT needs an authority-form target")
        return
    if target == "*":
        if method != "OPTIONS":
            raise ProtocolError(400, "'*' is only a target for OPTIONS")
        return
    if method == "CONNECT":
        if not AUTHORITY.fullmatch(target):
            raise ProtocolError(400, "malformed CONNECT authority")
        return
    if not ABSOLUTE.fullmatch(target):
        raise ProtocolError(400, "malformed request-target")


def parse_field(line: str) -> Tuple[str, str]:
    if line[:1] in (" ", "\t"):
        raise ProtocolError(400, "obsolete line folding")
    name, colon, value = line.partition(":")
    if not colon or not TOKEN_RE.fullmatch(name):
        raise ProtocolError(400, "invalid header field name")
    return name, value.strip(" \t")
