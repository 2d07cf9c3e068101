"""The PROXY protocol header (HAProxy's, versions 1 and 2), sans-IO.

A load balancer that speaks it sends one header at the very start of the
connection, before any byte of the client's: who the client was, as the
proxy saw it.  :func:`parse` is given what has been received so far; it
answers None while more bytes are needed, a :class:`ProxyInfo` once the
header is complete (``length`` says how many bytes to consume: whatever
follows belongs to the application protocol), or raises
:class:`ProxyError`.

It decides as early as it can: the spec asks receivers to abort on anything
that does not match "as soon as possible", and a client that is not a proxy
(an HTTP request, a TLS ClientHello) is refused on its first byte that
cannot begin a header, instead of waiting for a timeout.  The spec also
forbids guessing whether a header is present, so there is no "maybe not a
header" answer: on a listener that expects one, anything else is an error.

Version 1 is one line of text, at most :data:`MAX_V1` bytes with its CRLF.
Version 2 is a 16-byte binary block and an address block whose length it
announces; the address block may end with TLVs, which are skipped: nothing
here needs them, and not parsing them leaves nothing to get wrong.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Optional, Tuple, Union

Data = Union[bytes, bytearray]
Endpoint = Optional[Tuple[str, int]]

MAX_V1 = 107
"""The spec's bound on a version 1 line, CRLF included ("PROXY UNKNOWN" and
two full IPv6 addresses and ports)."""

MAX_V2 = 4096
"""Our bound on a whole version 2 header.  The spec allows 16 + 65535 bytes,
but the addresses take at most 216 and the rest is TLVs, which we skip: a
4 KiB cap leaves room for the usual ones (SSL details, cloud endpoint ids)
while bounding what a peer can make a worker buffer before it speaks."""

V1_PREFIX = b"PROXY "
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_FIXED = 16                      # signature, version/command, family, length

LOCAL, PROXY = 0, 1                # v2 commands
UNSPEC, INET, INET6, UNIX = 0, 1, 2, 3          # v2 address families
# The address block each family needs, ports included (v2, section 2.2).
ADDRESS_LENGTHS = {UNSPEC: 0, INET: 12, INET6: 36, UNIX: 216}
STREAM, DGRAM = 1, 2               # v2 transports (0 is UNSPEC)

V1_FAMILIES = (b"TCP4 ", b"TCP6 ", b"UNKNOWN")
# What the addresses and ports of an unfinished TCP4/TCP6 line may contain.
V1_CHARSETS = {b"TCP4 ": frozenset(b"0123456789. "),
               b"TCP6 ": frozenset(b"0123456789abcdefABCDEF: ")}
IPV4_TEXT = re.compile(rb"(?:0|[1-9][0-9]{0,2})(?:\.(?:0|[1-9][0-9]{0,2})){3}")
IPV6_TEXT = re.compile(rb"[0-9A-Fa-f:]{2,39}")
PORT_TEXT = re.compile(rb"0|[1-9][0-9]{0,4}")   # no sign, no heading zero


class ProxyError(ValueError):
    """The bytes are not (the start of) a header we accept: refuse the connection."""


@dataclass(frozen=True)
class ProxyInfo:
    """A complete header.

    ``source`` is the client as the proxy saw it, ``destination`` the address
    it connected to; both are None when the header carries no usable
    addresses (v1 UNKNOWN, v2 LOCAL, v2 UNSPEC or AF_UNIX): the socket's own
    addresses then stand.  ``length`` is how many bytes the header took.
    """

    source: Endpoint
    destination: Endpoint
    version: int
    length: int


def parse(data: Data, versions: str = "auto") -> Optional[ProxyInfo]:
    """Parse the header at the start of ``data``.

    ``versions``: "v1", "v2" or "auto" (either).  None: not enough bytes yet;
    call again with more.  Raises ProxyError if the bytes cannot be (the start
    of) an accepted header; ValueError for an unknown ``versions``.
    """
    if versions not in ("auto", "v1", "v2"):
        raise ValueError(f"versions must be 'auto', 'v1' or 'v2', not {versions!r}")
    if not data:
        return None
    # The two signatures differ on their first byte, so it picks the parser.
    if versions != "v2" and data[0] == V1_PREFIX[0]:
        return _parse_v1(bytes(data[:MAX_V1]))
    if versions != "v1" and data[0] == V2_SIGNATURE[0]:
        return _parse_v2(data)
    raise ProxyError(f"no PROXY protocol {_named(versions)} header: starts with {data[:8]!r}")


def _named(versions: str) -> str:
    return {"auto": "v1 or v2", "v1": "v1", "v2": "v2"}[versions]


# -- version 1 ---------------------------------------------------------------

def _parse_v1(head: bytes) -> Optional[ProxyInfo]:
    end = head.find(b"\r\n")
    if end < 0:
        _check_v1_start(head)
        if len(head) >= MAX_V1:
            raise ProxyError(f"PROXY v1 line without CRLF in its first {MAX_V1} bytes")
        return None
    source, destination = _v1_fields(head[:end])
    return ProxyInfo(source, destination, 1, end + 2)


def _check_v1_start(head: bytes) -> None:
    """Raise unless ``head`` (no CRLF yet) can still become a valid line."""
    if not V1_PREFIX.startswith(head[:len(V1_PREFIX)]):
        raise ProxyError(f"not a PROXY v1 line: {head[:len(V1_PREFIX)]!r}")
    if b"\n" in head or b"\r" in head[:-1]:
        raise ProxyError("bare CR or LF in a PROXY v1 line")
    rest = head[len(V1_PREFIX):]
    for family in V1_FAMILIES:
        if not family.startswith(rest[:len(family)]):
            continue
        tail = rest[len(family):].rstrip(b"\r")
        if family == b"UNKNOWN":
            # Anything may follow UNKNOWN, but only after a space.
            if tail[:1] in (b"", b" "):
                return
        elif set(tail) <= V1_CHARSETS[family] and tail.count(b" ") <= 3:
            return
    raise ProxyError(f"malformed PROXY v1 line: {head!r}")


def _v1_fields(line: bytes) -> Tuple[Endpoint, Endpoint]:
    if b"\r" in line or b"\n" in line:
        raise ProxyError("bare CR or LF in a PROXY v1 line")
    parts = line.split(b" ")        # exactly one space between fields: no empty field
    if parts[0] != b"PROXY" or len(parts) < 2:
        raise ProxyError(f"malformed PROXY v1 line: {line!r}")
    if parts[1] == b"UNKNOWN":
        return None, None               # the rest of the line is to be ignored
    if parts[1] not in (b"TCP4", b"TCP6") or len(parts) != 6:
        raise ProxyError(f"malformed PROXY v1 line: {line!r}")
    v6 = parts[1] == b"TCP6"
    source = (_v1_address(parts[2], v6), _v1_port(parts[4]))
    destination = (_v1_address(parts[3], v6), _v1_port(parts[5]))
    return source, destination


def _v1_address(raw: bytes, v6: bool) -> str:
    # The regexes keep out what ipaddress would accept but the spec does not
    # (scope ids, embedded dotted quads in TCP6) before ipaddress checks ranges.
    try:
        if v6 and IPV6_TEXT.fullmatch(raw):
            return str(ipaddress.IPv6Address(raw.decode("ascii")))
        if not v6 and IPV4_TEXT.fullmatch(raw):
            return str(ipaddress.IPv4Address(raw.decode("ascii")))
    except ValueError:
        pass
    raise ProxyError(f"not an {'IPv6' if v6 else 'IPv4'} address in a PROXY v1 line: {raw!r}")


def _v1_port(raw: bytes) -> int:
    if PORT_TEXT.fullmatch(raw) and int(raw) <= 65535:
        return int(raw)
    raise ProxyError(f"not a port in a PROXY v1 line: {raw!r}")


# -- version 2 ---------------------------------------------------------------

def _parse_v2(data: Data) -> Optional[ProxyInfo]:
    # Each field is checked as soon as it has arrived.
    if bytes(data[:len(V2_SIGNATURE)]) != V2_SIGNATURE[:len(data)]:
        raise ProxyError(f"not a PROXY v2 signature: {bytes(data[:12])!r}")
    if len(data) <= 12:
        return None
    version, command = data[12] >> 4, data[12] & 0x0F
    if version != 2:
        raise ProxyError(f"PROXY v2 header with version {version}")
    if command not in (LOCAL, PROXY):
        raise ProxyError(f"PROXY v2 header with command {command}")
    if len(data) <= 13:
        return None
    family, transport = data[13] >> 4, data[13] & 0x0F
    if family not in ADDRESS_LENGTHS or transport > DGRAM:
        raise ProxyError(f"PROXY v2 header with family/transport {data[13]:#04x}")
    if len(data) < V2_FIXED:
        return None
    length = V2_FIXED + int.from_bytes(data[14:16], "big")
    if length > MAX_V2:
        raise ProxyError(f"PROXY v2 header of {length} bytes (at most {MAX_V2})")
    # LOCAL and UNSPEC transports say to ignore the address block, so only a
    # PROXY command with a real transport needs the family's addresses.
    uses_addresses = command == PROXY and transport != 0
    if uses_addresses and length - V2_FIXED < ADDRESS_LENGTHS[family]:
        raise ProxyError(f"PROXY v2 address block of {length - V2_FIXED} bytes is too short")
    if len(data) < length:
        return None
    if not uses_addresses or family in (UNSPEC, UNIX):
        return ProxyInfo(None, None, 2, length)
    size = 4 if family == INET else 16
    block = bytes(data[V2_FIXED:V2_FIXED + 2 * size + 4])
    make = ipaddress.IPv4Address if family == INET else ipaddress.IPv6Address
    source = (str(make(block[:size])), int.from_bytes(block[2 * size:2 * size + 2], "big"))
    destination = (str(make(block[size:2 * size])), int.from_bytes(block[-2:], "big"))
    return ProxyInfo(source, destination, 2, length)
