"""The PROXY protocol on every kind: v1 and v2 headers (IPv4, IPv6, TLVs, LOCAL) from an
allowed peer name the client everywhere (client_address, REMOTE_ADDR/REMOTE_PORT, the
ASGI client, the access log), before the TLS handshake on a tls:// address; malformed
headers are refused before any app; a peer not allowed is never believed."""

from __future__ import annotations

import socket
import struct
import time

import pytest

from edge_helpers import (KINDS, V2_SIGNATURE, EdgeServed, Kind, ask, client_context, connect,
                          edge_server, info, proxy_v1, proxy_v2, reply_to, request_bytes, tlv,
                          until_closed)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

DESTINATION4, DESTINATION6 = ("192.0.2.1", 443), ("2001:db8::1", 443)
# Each case's source is its own, so the access log line it makes is told apart.
HEADERS = {
    "v1-ipv4": (proxy_v1(("203.0.113.10", 40001), DESTINATION4), ["203.0.113.10", 40001]),
    "v1-ipv6": (proxy_v1(("2001:db8::10", 40002), DESTINATION6), ["2001:db8::10", 40002]),
    "v2-ipv4-tlvs": (proxy_v2(("203.0.113.11", 40003), DESTINATION4,
                              tlv(0x01, b"http/1.1") + tlv(0x04, b"") + tlv(0xE0, b"x" * 300)),
                     ["203.0.113.11", 40003]),
    "v2-ipv6": (proxy_v2(("2001:db8::11", 40004), DESTINATION6, tlv(0x02, b"example.org")),
                ["2001:db8::11", 40004]),
    "v2-local": (proxy_v2(None, None, tlv(0x01, b"h2")), None),     # None: the socket's own
}
MALFORMED = {
    "v1-bad-port": b"PROXY TCP4 203.0.113.1 192.0.2.1 99999 443\r\n",
    "v1-bad-family": b"PROXY TCP5 203.0.113.1 192.0.2.1 1 443\r\n",
    "v1-lf-only": b"PROXY TCP4 203.0.113.1 192.0.2.1 1 443\n",
    "v1-too-long": b"PROXY TCP4 " + b"1" * 120 + b"\r\n",
    "v2-bad-version": V2_SIGNATURE + b"\x31\x11\x00\x0c" + bytes(12),
    "v2-short-block": V2_SIGNATURE + b"\x21\x11\x00\x04" + bytes(4),
    "v2-oversized": V2_SIGNATURE + b"\x21\x11" + struct.pack("!H", 5000) + bytes(5000),
    "no-header": b"",
}


@pytest.fixture(scope="module", params=KINDS, ids=str)
def server(request, tmp_path_factory, certs) -> EdgeServed:
    with edge_server(tmp_path_factory.mktemp("proxy"), request.param, "-b", "127.0.0.1:0",
                     "-b", "tls://127.0.0.1:0", *certs.args(), "--proxy-protocol", "auto",
                     "--access-log", "-") as served:
        yield served


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
@pytest.mark.parametrize("case", HEADERS)
def test_proxy_header_names_the_client(server, certs, case, tls):
    header, client = HEADERS[case]
    address = server.tls if tls else server.plain
    ident = f"{case}-{'tls' if tls else 'plain'}"
    with connect(address, client_context(certs) if tls else None, preface=header) as sock:
        answer = ask(server.kind, sock, ident)
        own = ["127.0.0.1", sock.getsockname()[1]]
    assert answer["client"] == (client or own)
    assert answer["scheme"] == ("https" if tls else "http")
    if server.kind.prefork_http and client is not None:
        line = server.log_line(f"id={ident} ")
        assert line.startswith(f"{client[0]} - - ["), line


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_header_is_refused_before_the_app(server, case):
    pid = server.worker()
    reply = reply_to(server.plain, MALFORMED[case] + request_bytes(server.kind, case))
    assert reply == b"", reply
    fine = info(server.kind, server.plain, f"after-{case}", preface=HEADERS["v1-ipv4"][0])
    assert fine["pid"] == pid
    assert not server.called(case)


def _not_believed(served: EdgeServed, header: bytes, ident: str) -> None:
    """``header`` sent by a peer whose headers are not believed: the bytes are the
    application protocol's, so HTTP answers 400 and a line handler reads them."""
    kind = served.kind
    with connect(served.plain, preface=header) as sock:
        sock.sendall(request_bytes(kind, ident))
        if kind.wire == "line":
            with sock.makefile("rb") as reader:
                assert reader.readline().startswith(b"? PROXY TCP4 203.0.113.66 ")
            answer = ask(kind, sock, ident)
            assert answer["client"] == ["127.0.0.1", sock.getsockname()[1]]
            return
        reply = until_closed(sock)
    if kind.prefork_http:
        assert reply.startswith(b"HTTP/1.1 400 "), reply
    else:
        assert b"400" in reply and b"Bad request" in reply, reply    # http.server's own 400
    assert not served.called(ident)


SPOOF = proxy_v1(("203.0.113.66", 1234), DESTINATION4)


@pytest.mark.parametrize("kind", KINDS, ids=str)
def test_peer_not_allowed_is_never_believed(tmp_path, kind):
    with edge_server(tmp_path, kind, "-b", "127.0.0.1:0", "--proxy-protocol", "auto",
                     "--proxy-allow-from", "10.0.0.0/8") as served:
        _not_believed(served, SPOOF, "spoofed")
        with connect(served.plain) as sock:
            answer = ask(kind, sock, "no-header")
            assert answer["client"] == ["127.0.0.1", sock.getsockname()[1]]


@pytest.mark.parametrize("kind", KINDS, ids=str)
def test_v1_only_refuses_a_v2_header(tmp_path, kind: Kind):
    wrong, right = "v2-ipv4-tlvs", "v1-ipv4"
    with edge_server(tmp_path, kind, "-b", "127.0.0.1:0", "--proxy-protocol", "v1") as served:
        reply = reply_to(served.plain, HEADERS[wrong][0] + request_bytes(kind, wrong))
        assert reply == b"" and not served.called(wrong)
        header, client = HEADERS[right]
        assert info(kind, served.plain, right, preface=header)["client"] == client


def test_half_a_header_then_silence_costs_nothing(server):
    """A peer that stops inside its header: the worker serves others meanwhile."""
    pid = server.worker()
    with connect(server.plain) as stalled:
        stalled.sendall(b"PROXY TCP4 203.0.113.")
        fine = info(server.kind, server.plain, "beside-stalled", preface=HEADERS["v1-ipv6"][0])
        assert fine["pid"] == pid and fine["client"] == HEADERS["v1-ipv6"][1]
        stalled.shutdown(socket.SHUT_WR)
        assert until_closed(stalled) == b""


@pytest.mark.parametrize("case", ["v1-ipv6", "v2-ipv4-tlvs"])
def test_header_in_pieces(server, case):
    """A header that arrives in several segments is read as it comes."""
    header, client = HEADERS[case]
    with connect(server.plain) as sock:
        cuts = [0, 3, 13, 17, len(header) // 2, len(header)]   # in the signature, the block...
        for start, end in zip(cuts, cuts[1:]):
            sock.sendall(header[start:end])
            time.sleep(0.02)       # separate segments: the worker reads each on its own
        assert ask(server.kind, sock, f"pieces-{case}")["client"] == client
