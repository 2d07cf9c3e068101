"""Lists of trusted peers: addresses and CIDR ranges, as operators write them.

``proxy_allow_from`` and ``forwarded_allow_ips`` are such lists: a comma
separated string of IPv4 and IPv6 addresses and networks (``10.0.0.0/8``,
``fd00::/8``), or ``*`` for every peer.  :func:`parse` turns one into a
:class:`Networks` once, when the config is built; :meth:`Networks.allows`
answers per connection.

A peer on a unix socket has no IP address; it is a process on this host,
which the socket file's mode already vets, so it is trusted (as gunicorn
and uvicorn do) unless the list is empty.
"""

from __future__ import annotations

import ipaddress
from typing import Dict, FrozenSet, Optional, Tuple, Union

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
SEEN_MAX = 4096


class Networks:
    """A parsed allow-list; see the module docstring."""

    __slots__ = ("text", "everyone", "_exact", "_ranges", "_seen")

    def __init__(self, text: str, everyone: bool, exact: FrozenSet[Address],
                 ranges: Tuple[Network, ...]) -> None:
        self.text = text
        self.everyone = everyone
        self._exact = exact          # single addresses: one set lookup
        self._ranges = ranges
        # Peers repeat (the proxy, the balancer): an answer per address string,
        # bounded, spares parsing it on every connection.
        self._seen: Dict[str, bool] = {}

    def allows(self, host: object) -> bool:
        """Is ``host`` (an IP address string; anything else is a unix socket peer)
        in the list?"""
        if self.everyone:
            return True
        if isinstance(host, str):
            known = self._seen.get(host)
            if known is None:
                known = self._judge(host)
                if len(self._seen) < SEEN_MAX:
                    self._seen[host] = known
            return known
        return bool(self._exact or self._ranges)     # a unix socket peer

    def _judge(self, host: str) -> bool:
        address = ip(host)
        if address is None:
            return bool(self._exact or self._ranges)     # a unix socket peer
        if address in self._exact:
            return True
        return any(address in network for network in self._ranges)

    def __bool__(self) -> bool:
        return self.everyone or bool(self._exact or self._ranges)

    def __repr__(self) -> str:
        return f"Networks({self.text!r})"


def ip(host: str) -> Optional[Address]:
    """``host`` as an address (an IPv4-mapped IPv6 address as its IPv4 one); None if
    it is not an IP address."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])   # a zone id is not ours
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def parse(text: str) -> Networks:
    """Parse a comma-separated list; ValueError names the entry that is not an
    address, a network or ``*``."""
    exact, ranges, everyone = set(), [], False
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        if entry == "*":
            everyone = True
            continue
        try:
            if "/" in entry:
                network = ipaddress.ip_network(entry, strict=False)
                mapped = getattr(network.network_address, "ipv4_mapped", None)
                if mapped is not None and network.prefixlen >= 96:
                    # Peers are judged as IPv4 when IPv4-mapped (ip()): so is the range.
                    network = ipaddress.ip_network(f"{mapped}/{network.prefixlen - 96}")
                ranges.append(network)
            else:
                address = ip(entry)
                if address is None:
                    raise ValueError(entry)
                exact.add(address)
        except ValueError:
            raise ValueError(f"{entry!r} is not an IP address, a CIDR network or '*'") from None
    return Networks(text, everyone, frozenset(exact), tuple(ranges))


def check(text: str) -> str:
    """The config check: "" when ``text`` parses, else why not."""
    try:
        parse(text)
    except ValueError as exc:
        return str(exc)
    return ""
