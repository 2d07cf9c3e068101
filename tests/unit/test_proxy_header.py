"""The PROXY protocol header parser: valid headers of both versions, every
refusal, byte-by-byte feeding, and properties over random input."""

from __future__ import annotations

import ipaddress
import struct
from typing import Optional, Tuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prefork.servers.edge.proxy_header import (MAX_V1, MAX_V2, V2_SIGNATURE, ProxyError,
                                               ProxyInfo, parse)

Endpoint = Optional[Tuple[str, int]]


# -- builders: what a proxy would send ----------------------------------------

def v1(source: Endpoint, destination: Endpoint) -> bytes:
    if source is None or destination is None:
        return b"PROXY UNKNOWN\r\n"
    family = "TCP6" if ":" in source[0] else "TCP4"
    return (f"PROXY {family} {source[0]} {destination[0]} {source[1]} {destination[1]}\r\n"
            .encode("ascii"))


def v2(source: Endpoint = None, destination: Endpoint = None, *, command: int = 1,
       family: Optional[int] = None, transport: int = 1, block: Optional[bytes] = None,
       tlvs: bytes = b"", version: int = 2) -> bytes:
    if block is None:
        if source is None or destination is None:
            block = b""
        else:
            src, dst = ipaddress.ip_address(source[0]), ipaddress.ip_address(destination[0])
            block = src.packed + dst.packed + struct.pack("!HH", source[1], destination[1])
    if family is None:
        family = 0 if source is None else (2 if ":" in source[0] else 1)
    body = block + tlvs
    return (V2_SIGNATURE + bytes([version << 4 | command, family << 4 | transport])
            + struct.pack("!H", len(body)) + body)


def tlv(kind: int, value: bytes) -> bytes:
    return bytes([kind]) + struct.pack("!H", len(value)) + value


# -- version 1 -----------------------------------------------------------------

def test_v1_tcp4() -> None:
    data = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"
    assert parse(data) == ProxyInfo(("192.168.0.1", 56324), ("192.168.0.11", 443), 1, len(data))


def test_v1_tcp6_is_normalised() -> None:
    data = b"PROXY TCP6 2001:DB8:0:0:0:0:0:1 ::1 1 65535\r\n"
    assert parse(data) == ProxyInfo(("2001:db8::1", 1), ("::1", 65535), 1, len(data))


def test_v1_ports_zero_and_max() -> None:
    info = parse(b"PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n")
    assert info is not None
    assert info.source == ("0.0.0.0", 0) and info.destination == ("255.255.255.255", 65535)


@pytest.mark.parametrize("line", [
    b"PROXY UNKNOWN\r\n",
    b"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
    b"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n",
    b"PROXY UNKNOWN whatever \xff is here\r\n",
])
def test_v1_unknown_keeps_the_socket_addresses(line: bytes) -> None:
    assert parse(line) == ProxyInfo(None, None, 1, len(line))


def test_v1_worst_case_is_exactly_the_bound() -> None:
    line = (b"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
            b"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n")
    assert len(line) == MAX_V1
    assert parse(line) is not None
    with pytest.raises(ProxyError, match="without CRLF"):
        parse(line[:-2] + b"f\r\n")


def test_v1_bytes_after_the_header_are_not_consumed() -> None:
    header = b"PROXY TCP4 1.2.3.4 5.6.7.8 1000 80\r\n"
    info = parse(header + b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert info is not None and info.length == len(header)


def test_v1_header_followed_by_a_v2_signature_is_v1() -> None:
    header = b"PROXY UNKNOWN\r\n"
    info = parse(header + V2_SIGNATURE)
    assert info is not None and info.version == 1 and info.length == len(header)


@pytest.mark.parametrize("line", [
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
    b"PROXY TCP6 ::1 ::2 1 2\r\n",
    b"PROXY UNKNOWN\r\n",
    b"PROXY UNKNOWN 1 2\r\n",
])
def test_v1_every_prefix_waits(line: bytes) -> None:
    for end in range(len(line)):
        assert parse(line[:end]) is None, line[:end]
    assert parse(line) is not None


@pytest.mark.parametrize("line", [
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n",            # trailing space
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",               # missing field
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",           # extra field
    b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",            # double space
    b"PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
    b"PROXY\tTCP4 1.2.3.4 5.6.7.8 1 2\r\n",
    b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",             # unknown family
    b"PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n",             # case matters
    b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
    b"PROXY UNKNOWNX\r\n",                             # UNKNOWN then no space
    b"PROXY\r\n",
    b"PROXY \r\n",
    b"PROXY TCP4\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",               # bare LF
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n",           # bare CR
    b"PROXY UNKNOWN \r \r\n",
])
def test_v1_malformed_lines(line: bytes) -> None:
    with pytest.raises(ProxyError):
        parse(line)


@pytest.mark.parametrize("address", [
    b"1.2.3", b"1.2.3.4.5", b"256.1.1.1", b"01.2.3.4", b"1.2.3.04", b"1..3.4",
    b"::1", b"1.2.3.4/8", b"-1.2.3.4", b"", b"a.b.c.d", b"1.2.3.4%eth0",
])
def test_v1_bad_ipv4(address: bytes) -> None:
    with pytest.raises(ProxyError):
        parse(b"PROXY TCP4 " + address + b" 5.6.7.8 1 2\r\n")
    with pytest.raises(ProxyError):
        parse(b"PROXY TCP4 5.6.7.8 " + address + b" 1 2\r\n")


@pytest.mark.parametrize("address", [
    b"1.2.3.4", b":::1", b"1::2::3", b"12345::1", b"g::1", b"::1%eth0", b"::ffff:1.2.3.4",
    b"1:2:3:4:5:6:7:8:9", b"[::1]", b"0000:0000:0000:0000:0000:0000:0000:00001",
])
def test_v1_bad_ipv6(address: bytes) -> None:
    with pytest.raises(ProxyError):
        parse(b"PROXY TCP6 " + address + b" ::2 1 2\r\n")
    with pytest.raises(ProxyError):
        parse(b"PROXY TCP6 ::2 " + address + b" 1 2\r\n")


@pytest.mark.parametrize("port", [
    b"65536", b"99999", b"100000", b"-1", b"+1", b"01", b"00", b"1e3", b"", b"0x10", b"\xd9\xa1",
])
def test_v1_bad_ports(port: bytes) -> None:
    with pytest.raises(ProxyError):
        parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 " + port + b" 2\r\n")
    with pytest.raises(ProxyError):
        parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 2 " + port + b"\r\n")


def test_v1_overlong_without_crlf() -> None:
    assert parse(b"PROXY UNKNOWN " + b"x" * (MAX_V1 - 15)) is None     # 106 bytes: may end
    with pytest.raises(ProxyError, match="without CRLF"):
        parse(b"PROXY UNKNOWN " + b"x" * (MAX_V1 - 14))


@pytest.mark.parametrize("start", [
    b"G", b"GET / HTTP/1.1\r\n", b"POST", b"PUT ", b"PRI * HTTP/2.0", b"PROXZ",
    b"PROXY_", b"proxy ", b"\x16", b"\x16\x03\x01\x02\x00\x01", b"\x00", b" PROXY",
    b"PROXY X", b"PROXY TCP4 1.2.3.4 ::1",            # ':' cannot be in a TCP4 line
    b"PROXY TCP6 1::2 x", b"PROXY TCP4 1 2 3 4 5",     # a fifth field
    b"PROXY TCP4\n", b"PROXY T\rC", b"PROXY UNKNOWNX",
])
def test_refused_as_soon_as_it_cannot_be_a_header(start: bytes) -> None:
    with pytest.raises(ProxyError):
        parse(start)


# -- version 2 -----------------------------------------------------------------

def test_v2_ipv4() -> None:
    data = v2(("10.1.2.3", 40000), ("10.0.0.1", 443))
    assert parse(data) == ProxyInfo(("10.1.2.3", 40000), ("10.0.0.1", 443), 2, 28)


def test_v2_ipv6() -> None:
    data = v2(("2001:db8::7", 1), ("::1", 65535))
    assert parse(data) == ProxyInfo(("2001:db8::7", 1), ("::1", 65535), 2, 16 + 36)


def test_v2_udp_is_accepted_too() -> None:
    info = parse(v2(("10.1.2.3", 53), ("10.0.0.1", 53), transport=2))
    assert info is not None and info.source == ("10.1.2.3", 53)


def test_v2_tlvs_are_skipped() -> None:
    tlvs = tlv(0x01, b"h2") + tlv(0x20, b"\x01" + b"\x00" * 4) + tlv(0xEA, b"vpce-123")
    data = v2(("10.1.2.3", 5), ("10.0.0.1", 6), tlvs=tlvs)
    assert parse(data) == ProxyInfo(("10.1.2.3", 5), ("10.0.0.1", 6), 2, len(data))


def test_v2_tlv_bytes_are_not_parsed() -> None:
    # A TLV claiming more than the block holds is not our concern: the length
    # field alone bounds the header.
    data = v2(("10.1.2.3", 5), ("10.0.0.1", 6), tlvs=b"\x01\xff\xff")
    info = parse(data)
    assert info is not None and info.length == len(data)


def test_v2_local_ignores_the_block() -> None:
    assert parse(v2(command=0, family=0, transport=0)) == ProxyInfo(None, None, 2, 16)
    # LOCAL with addresses anyway (receivers must skip them, not assume zero)
    data = v2(("10.1.2.3", 5), ("10.0.0.1", 6), command=0)
    assert parse(data) == ProxyInfo(None, None, 2, len(data))
    # LOCAL may announce a family without its addresses: they are ignored
    assert parse(v2(command=0, family=2, block=b"")) == ProxyInfo(None, None, 2, 16)


@pytest.mark.parametrize("family, transport, size", [
    (0, 0, 0), (0, 1, 0), (0, 2, 7), (3, 1, 216), (3, 2, 216), (1, 0, 0), (2, 0, 3), (3, 0, 0),
])
def test_v2_proxy_without_usable_addresses(family: int, transport: int, size: int) -> None:
    data = v2(family=family, transport=transport, block=b"\x01" * size)
    assert parse(data) == ProxyInfo(None, None, 2, 16 + size)


def test_v2_bytes_after_the_header_are_not_consumed() -> None:
    header = v2(("10.1.2.3", 5), ("10.0.0.1", 6), tlvs=tlv(1, b"http/1.1"))
    info = parse(header + b"\x16\x03\x01" + V2_SIGNATURE)
    assert info is not None and info.length == len(header)


def test_v2_accepts_a_bytearray() -> None:
    info = parse(bytearray(v2(("10.1.2.3", 5), ("10.0.0.1", 6))))
    assert info is not None and info.source == ("10.1.2.3", 5)
    assert parse(bytearray(b"PROXY UNKNOWN\r\n")) == ProxyInfo(None, None, 1, 15)


@pytest.mark.parametrize("data", [
    v2(("10.1.2.3", 5), ("10.0.0.1", 6)),
    v2(("2001:db8::7", 1), ("::1", 2), tlvs=tlv(4, b"x" * 300)),
    v2(command=0, family=0, transport=0),
    v2(family=3, block=b"/" * 216),
])
def test_v2_every_prefix_waits(data: bytes) -> None:
    for end in range(len(data)):
        assert parse(data[:end]) is None
    assert parse(data) is not None


def test_v2_at_the_cap() -> None:
    base = v2(("10.1.2.3", 5), ("10.0.0.1", 6))
    fits = v2(("10.1.2.3", 5), ("10.0.0.1", 6), tlvs=b"\x00" * (MAX_V2 - len(base)))
    assert len(fits) == MAX_V2 and parse(fits) is not None
    over = v2(("10.1.2.3", 5), ("10.0.0.1", 6), tlvs=b"\x00" * (MAX_V2 - len(base) + 1))
    with pytest.raises(ProxyError, match="at most"):
        parse(over[:16])                               # refused on the length field alone


@pytest.mark.parametrize("data", [
    V2_SIGNATURE[:5] + b"\x01",                        # signature broken midway
    V2_SIGNATURE[:-1] + b"\x0b",
    b"\r\n\r\n\r\n",
    b"\rX",
    V2_SIGNATURE + b"\x11",                            # version 1 in the binary form
    V2_SIGNATURE + b"\x31",                            # version 3
    V2_SIGNATURE + b"\x01",                            # version 0
    V2_SIGNATURE + b"\x22",                            # command 2
    V2_SIGNATURE + b"\x2f",
    V2_SIGNATURE + b"\x21\x41",                        # family 4
    V2_SIGNATURE + b"\x21\xf1",
    V2_SIGNATURE + b"\x21\x13",                        # transport 3
    V2_SIGNATURE + b"\x20\x0f",                        # LOCAL does not excuse a bad byte
    V2_SIGNATURE + b"\x21\x11\x00\x0b",                # IPv4 needs 12 bytes
    V2_SIGNATURE + b"\x21\x21\x00\x23",                # IPv6 needs 36
    V2_SIGNATURE + b"\x21\x31\x00\xd7",                # AF_UNIX needs 216
    V2_SIGNATURE + b"\x21\x12\x00\x00",
    V2_SIGNATURE + b"\x21\x11\xff\xff",                # over the cap
])
def test_v2_malformed(data: bytes) -> None:
    with pytest.raises(ProxyError):
        parse(data)


def test_v2_truncated_block_is_refused_before_it_arrives() -> None:
    data = v2(family=1, block=b"\x00" * 8)
    with pytest.raises(ProxyError, match="too short"):
        parse(data[:16])


# -- versions ------------------------------------------------------------------

def test_versions_v1_refuses_v2_and_vice_versa() -> None:
    one, two = b"PROXY UNKNOWN\r\n", v2(command=0, family=0, transport=0)
    assert parse(one, "v1") is not None and parse(two, "v2") is not None
    assert parse(one, "auto") is not None and parse(two, "auto") is not None
    with pytest.raises(ProxyError, match="v1 header"):
        parse(two[:1], "v1")
    with pytest.raises(ProxyError, match="v2 header"):
        parse(one[:1], "v2")


def test_unknown_versions_is_a_programming_error() -> None:
    with pytest.raises(ValueError) as caught:
        parse(b"PROXY UNKNOWN\r\n", "v3")
    assert not isinstance(caught.value, ProxyError)


def test_nothing_yet() -> None:
    assert parse(b"") is None and parse(b"", "v1") is None and parse(b"", "v2") is None


# -- properties ----------------------------------------------------------------

@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300), st.sampled_from(["auto", "v1", "v2"]))
def test_random_bytes_raise_nothing_but_proxy_error(data: bytes, versions: str) -> None:
    try:
        info = parse(data, versions)
    except ProxyError:
        return
    if info is not None:
        assert 0 < info.length <= len(data)
        assert info.version in (1, 2)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=250), st.sampled_from([b"PROXY ", b"PROXY TCP4 ", b"PROXY TCP6 ",
                                                 b"PROXY UNKNOWN ", V2_SIGNATURE + b"\x21"]))
def test_random_bytes_after_a_valid_start(tail: bytes, start: bytes) -> None:
    try:
        parse(start + tail)
    except ProxyError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200), st.sampled_from(["auto", "v1", "v2"]))
def test_an_error_stays_an_error(data: bytes, versions: str) -> None:
    # Once refused, more bytes never make it acceptable: refusing early is sound.
    try:
        parse(data, versions)
    except ProxyError:
        for extra in (b"\r\n", b"\x00" * 300, b" 1 2\r\n"):
            with pytest.raises(ProxyError):
                parse(data + extra, versions)


ipv4s = st.ip_addresses(v=4).map(str)
ipv6s = st.ip_addresses(v=6).map(str)
ports = st.integers(0, 65535)


@given(st.one_of(st.tuples(ipv4s, ports, ipv4s, ports), st.tuples(ipv6s, ports, ipv6s, ports)),
       st.binary(max_size=20))
def test_v1_round_trip(endpoints: Tuple[str, int, str, int], after: bytes) -> None:
    source, destination = endpoints[:2], endpoints[2:]
    header = v1(source, destination)
    assert all(parse(header[:end]) is None for end in range(len(header)))
    assert parse(header + after, "v1") == ProxyInfo(source, destination, 1, len(header))


@given(st.one_of(st.tuples(ipv4s, ports, ipv4s, ports), st.tuples(ipv6s, ports, ipv6s, ports)),
       st.binary(max_size=100), st.binary(max_size=20))
def test_v2_round_trip(endpoints: Tuple[str, int, str, int], tlvs: bytes, after: bytes) -> None:
    source, destination = endpoints[:2], endpoints[2:]
    header = v2(source, destination, tlvs=tlvs)
    assert all(parse(header[:end]) is None for end in range(len(header)))
    assert parse(header + after, "v2") == ProxyInfo(source, destination, 2, len(header))
