"""Trusted forwarded headers: the client's address and scheme as a proxy reports them.

Behind a reverse proxy every connection comes from the proxy; the proxy
says who the client was in a header.  Anyone can send such a header, so it
is believed only when the peer is in the trusted list, and only as far as
the chain of hops runs through trusted proxies.

Which header: the operator says (``kind``, the ``forwarded_headers``
setting): ``X-Forwarded-For`` and ``X-Forwarded-Proto`` (what nginx,
ingresses and cloud balancers send), or RFC 7239 ``Forwarded``.  The other
kind is ignored: a proxy that appends ``X-Forwarded-For`` passes a client's
own ``Forwarded`` through untouched, and believing it would let the client
choose its address.  ``kind="auto"`` takes ``Forwarded`` if the request has
one (even an empty or malformed one), else the X- pair, never mixing them;
it is safe only behind proxies that set or strip both.

The chain rule: each proxy appends the address it received the request
from, so the list reads client first, nearest hop last, and only its right
end is written by proxies we trust.  The walk starts at the right, skips
hops that are themselves trusted, and stops at the first that is not: that
one is the client.  If every hop is trusted (``*`` trusts all), the client
is the leftmost.  A hop that is not an IP address ("unknown", an obfuscated
``_name``, a malformed element, an element without ``for=``) also stops the
walk: it is the client as far as anyone can tell, and having no address to
give, the peer's address is kept rather than one further left, which the
client could have written.

The scheme is the one the nearest proxy saw: the rightmost
``X-Forwarded-Proto`` entry, or the ``proto=`` of the rightmost ``Forwarded``
element (the one the connected proxy wrote), whichever hop the client turns
out to be.  Only "http" and "https" are taken.

Nothing here raises on what a request contains: what cannot be parsed is
not believed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Dict, Final, Iterable, List, Optional, Sequence, Tuple

from ...netlist import Networks, ip

# One hop: an address and maybe a port, or None when it names no address.
Hop = Optional[Tuple[str, Optional[int]]]

SCHEMES: Final = ("http", "https")
INITIALS: Final = frozenset("xXfF")
KINDS: Final = {"x-forwarded": ("x-forwarded-for", "x-forwarded-proto"),
                "forwarded": ("forwarded",),
                "auto": ("forwarded", "x-forwarded-for", "x-forwarded-proto")}

# RFC 7239 section 4: forwarded-pair = token "=" value, value = token / quoted-string.
# Unquoted values also take ':' and brackets: proxies that write
# for=[2001:db8::1] unquoted (wrongly) are common, and taking them costs nothing.
PAIR = re.compile(r"([!#$%&'*+.^_`|~0-9A-Za-z-]+)="
                  r"(?:\"((?:[^\"\\]|\\.)*)\"|([!#$%&'*+.^_`|~0-9A-Za-z:\[\]-]+))", re.DOTALL)
ESCAPE = re.compile(r"\\(.)", re.DOTALL)
# RFC 7239 section 6: node = nodename [ ":" node-port ]; an obfuscated port is "_" ...
PORT = r"(?::([0-9]{1,5}|_[A-Za-z0-9._-]+))?"
IPV6_NODE = re.compile(r"\[([0-9A-Fa-f:.]+)\]" + PORT)
IPV4_NODE = re.compile(r"([0-9.]+)" + PORT)
# X-Forwarded-For writes IPv6 without brackets.  A set, not a regex: "[...]*:[...]*"
# backtracks quadratically on a long run of colons.
BARE_IPV6 = frozenset("0123456789abcdefABCDEF:.")


@dataclass(frozen=True)
class Forwarded:
    """What the trusted headers say.

    ``host``: the client address to use (None: keep the peer's).  ``port``:
    the client's port when the header gave one with that address, else None.
    ``scheme``: "http" or "https" when the nearest proxy said so, else None.
    """

    host: Optional[str]
    port: Optional[int]
    scheme: Optional[str]


def resolve(peer_host: Optional[str], headers: Sequence[Tuple[str, str]],
            trusted: Networks, kind: str = "auto") -> Optional[Forwarded]:
    """The client address and scheme that ``headers`` (name as sent, value)
    establish for a request from ``peer_host`` (None or a non-IP string for a
    unix socket peer, judged as :meth:`Networks.allows` does).

    None when nothing changes: the peer is not trusted, no forwarding header
    is present, or what is present yields neither an address nor a scheme.
    """
    wanted = KINDS[kind]
    fields: Dict[str, List[str]] = {}
    for name, value in headers:
        # Every such name starts with x or f: the others cost no call at all.
        if name[:1] in INITIALS:
            lowered = name.lower()
            if lowered in wanted:
                fields.setdefault(lowered, []).append(value)
    # The usual request has no such header: it costs this scan, no address parsing.
    if not fields or not trusted.allows(peer_host):
        return None
    if "forwarded" in fields:
        elements = [element for value in fields["forwarded"] for element in _elements(value)]
        hops = [_node(element.get("for")) if element is not None else None
                for element in elements]
        nearest = elements[-1] if elements else None
        scheme = _scheme(nearest.get("proto") if nearest is not None else None)
    else:
        entries = _entries(fields.get("x-forwarded-for", ()))
        hops = [_node(entry) for entry in entries]
        protos = _entries(fields.get("x-forwarded-proto", ()))
        scheme = _scheme(protos[-1] if protos else None)
    host, port = _client(hops, trusted) or (None, None)
    if host is None and scheme is None:
        return None
    return Forwarded(host, port, scheme)


def client_and_scheme(address: Any, headers: Sequence[Tuple[str, str]], trusted: Networks,
                      kind: str) -> Tuple[Any, Optional[str]]:
    """(the client's address, the scheme or None) that a trusted peer at ``address``
    reports in ``headers``; ``address`` itself (the same object) and None when
    they report nothing.  An address given without a port gets port 0."""
    said = resolve(address[0] if isinstance(address, tuple) else None, headers, trusted, kind)
    if said is None:
        return address, None
    if said.host is not None:
        address = (said.host, said.port if said.port is not None else 0)
    return address, said.scheme


def _client(hops: List[Hop], trusted: Networks) -> Hop:
    """The chain rule of the module docstring."""
    chosen: Hop = None
    for hop in reversed(hops):
        if hop is None:
            return None
        chosen = hop
        if not trusted.allows(hop[0]):      # hop[0] is an IP address: allows() judges it
            return hop
    return chosen


def _scheme(proto: Optional[str]) -> Optional[str]:
    if proto is None:
        return None
    lowered = proto.strip().lower()
    return lowered if lowered in SCHEMES else None


def _entries(values: Iterable[str]) -> List[str]:
    """A comma separated list over several field lines, in order; empty items
    are dropped, as RFC 9110's list rule says."""
    return [item.strip() for value in values for item in value.split(",") if item.strip()]


def _node(text: Optional[str]) -> Hop:
    """A node (``1.2.3.4``, ``1.2.3.4:80``, ``[::1]:80``, bare ``::1``) as an
    address and port; None for anything else ("unknown", obfuscated, garbage)."""
    if text is None:
        return None
    bracketed, plain = IPV6_NODE.fullmatch(text), IPV4_NODE.fullmatch(text)
    if bracketed is not None:
        host, port_text = bracketed.group(1), bracketed.group(2)
        if ":" not in host:
            return None                      # brackets hold IPv6 only
    elif plain is not None:
        host, port_text = plain.group(1), plain.group(2)
    elif ":" in text and set(text) <= BARE_IPV6:
        host, port_text = text, None
    else:
        return None
    address = ip(host)       # an IPv4-mapped address comes out as IPv4, as netlist judges it
    if address is None:
        return None
    port: Optional[int] = None
    if port_text is not None and not port_text.startswith("_"):
        port = int(port_text)
        if port > 65535:
            return None
    return str(address), port


def _elements(value: str) -> List[Optional[Dict[str, str]]]:
    """One ``Forwarded`` field value as its elements, each a dict of lowercased
    parameter names to values; None for an element that does not parse."""
    elements: List[Optional[Dict[str, str]]] = []
    for raw_element in _split(value):
        if not "".join(raw_element).strip():
            continue                         # an empty list item
        element: Optional[Dict[str, str]] = {}
        for raw_pair in raw_element:
            pair = raw_pair.strip(" \t")
            if not pair:
                continue                     # forwarded-element allows empty pairs
            match = PAIR.fullmatch(pair)
            name = match.group(1).lower() if match else ""
            if match is None or element is None or name in element:
                element = None               # malformed, or a parameter given twice
                break
            quoted, token = match.group(2), match.group(3)
            element[name] = ESCAPE.sub(r"\1", quoted) if quoted is not None else token
        elements.append(element)
    return elements


def _split(value: str) -> List[List[str]]:
    """Split at commas (elements) and semicolons (pairs) outside quoted strings.

    An unterminated quote runs to the end of the value, so the element it is
    in fails to parse and stops the walk there: a client cannot make a quote
    swallow what a proxy appended and be believed for it.
    """
    elements: List[List[str]] = [[]]
    start, quoted, escaped = 0, False, False
    for index, char in enumerate(value):
        if escaped:
            escaped = False
        elif quoted:
            if char == "\\":
                escaped = True
            elif char == '"':
                quoted = False
        elif char == '"':
            quoted = True
        elif char in ",;":
            elements[-1].append(value[start:index])
            if char == ",":
                elements.append([])
            start = index + 1
    elements[-1].append(value[start:])
    return elements
