"""Hostile clients at the edge (issue 14): TLS handshakes, PROXY headers, forwarded headers.

Every scenario runs against three kinds, ``-w 2`` on ``tls://127.0.0.1:0``
with a trustme certificate and ``--header-timeout 2``: the sync worker
(WSGI), the thread worker with a handler class, the asyncio worker (ASGI).
The apps (tests/apps/hostile_edge_apps.py) answer with the client address
they were told and record each call, so a refused connection provably never
reached one.  The real client is Python's ``ssl`` with verification, a new
connection (a full handshake) per request.  Each scenario ends with the
same workers alive, no traceback in the log, and a real client answered.
The server and the clients are in edge_clients.py.

- Handshake slowloris: 200 connections (1000 in the long form) that never
  send a ClientHello, or 20 (100) that send one a byte every 100 ms (after
  a PROXY header sent the same way, with ``--proxy-protocol auto``), kept
  up as an attacker would (one the server closes is opened again) for 5 s
  (30 s): the real client's requests all succeed, each under 1 s, and the
  server closes every attacking connection header_timeout after it came
  (silent ones on HTTP listeners ~1-1.5 s later: TCP_DEFER_ACCEPT keeps
  them in the kernel at first).  A ClientHello begun just before
  header_timeout gets only what is left of it.
- Garbage handshakes: random bytes after 0x16, a random TLS record, a
  ClientHello cut short then EOF, a whole or cut ClientHello then RST,
  plain HTTP: all at once, each refused (a close, a TLS alert, or a 400 for
  the plain text on HTTP listeners) within header_timeout.
- PROXY (``--proxy-protocol auto``): random bytes, an endless v1 line, a v2
  length over the cap, a bad v1 address, a v2 signature cut then EOF: each
  closed at once; v1/v2 headers cut short and left idle: closed at
  header_timeout; a good header is still believed, also in pieces.  From a
  peer not in proxy_allow_from a PROXY header, before or inside TLS, is
  never believed.
- Spoofed X-Forwarded-* / Forwarded headers from a peer not in
  ``--forwarded-allow-ips 10.0.0.0/8`` (both ``--forwarded-headers``
  modes): the app sees 127.0.0.1 and https.  HTTP kinds only: a handler
  class has no headers.
"""

from __future__ import annotations

import json
import random
import resource
import socket
import ssl
import struct
import time
from types import SimpleNamespace
from typing import List

import pytest
import trustme

from conftest import seconds
from edge_clients import (GOOD_PROXY, HEADER_TIMEOUT, KINDS, PROBE_TIMEOUT, Edge, Loris,
                          check_refused, client_hello, exchange, refusals, summary)
from test_hostile_clients import held_sockets, ms, percentile, raise_fd_limit

pytestmark = pytest.mark.integration

LATENCY_LIMIT = 1.0          # seconds: every one of the real client's requests
PROBE_SECONDS = seconds(3.5, 30)
SILENT = int(seconds(200, 1000))
TRICKLERS = int(seconds(20, 100))
SWEEP_SLACK = 2.0            # past header_timeout: the loops' sweep, and this test's pace
# HTTP listeners set TCP_DEFER_ACCEPT (1 s): the kernel hands a silent connection to a
# worker only ~1-1.5 s after it came, and header_timeout runs from the accept.
DEFERRED = 2.0
GARBAGE = int(seconds(10, 100))    # connections per garbage case
PROXY_V2 = b"\r\n\r\n\x00\r\nQUIT\n"


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    ca = trustme.CA()
    folder = tmp_path_factory.mktemp("certs")
    certfile = folder / "server.pem"
    ca.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem.write_to_path(
        str(certfile))
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return SimpleNamespace(certfile=str(certfile), client=client, hello=client_hello(client))


@pytest.fixture
def fd_limit():
    saved = resource.getrlimit(resource.RLIMIT_NOFILE)
    raise_fd_limit(8192)         # before the server starts: it inherits it
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, saved)


# -- handshake slowloris -------------------------------------------------------------------


@pytest.mark.timeout(int(seconds(90, 240)))
@pytest.mark.parametrize("attack", ["silent", "trickle", "proxy-trickle"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_handshake_slowloris(prefork_server, certs, tmp_path, figures, fd_limit, kind, attack):
    edge = Edge(prefork_server, certs, tmp_path, kind, proxied=attack == "proxy-trickle")
    calm = []
    for _ in range(20):
        began = time.perf_counter()
        edge.ask()
        calm.append(time.perf_counter() - began)
    baseline = held_sockets(edge.proc)
    n = SILENT if attack == "silent" else TRICKLERS
    loris = Loris(edge.address, n, None if attack == "silent" else edge.proxy + certs.hello)
    times: List[float] = []
    failures: List[str] = []
    samples: List[int] = []
    try:
        loris.fill()
        deadline = time.monotonic() + 15
        while held_sockets(edge.proc) - baseline < 0.95 * n:
            assert time.monotonic() < deadline, \
                f"the workers hold {held_sockets(edge.proc) - baseline} of {n}"
            loris.pump()
            time.sleep(0.02)
        held_at_start = held_sockets(edge.proc) - baseline
        end = time.monotonic() + PROBE_SECONDS
        next_sample = 0.0
        while time.monotonic() < end:
            began = time.perf_counter()
            try:
                assert edge.ask()["remote_addr"] == edge.real
                times.append(time.perf_counter() - began)
            except (OSError, AssertionError, ValueError) as exc:
                failures.append(f"{time.perf_counter() - began:.2f} s: {exc!r}")
            if time.monotonic() >= next_sample:
                next_sample = time.monotonic() + 0.5
                samples.append(held_sockets(edge.proc) - baseline)
            loris.pump()
            time.sleep(0.01)
        # The last wave, no longer renewed: the server must close every one of them.
        loris.reopen = False
        waves_closed = len(loris.ages)
        deadline = time.monotonic() + HEADER_TIMEOUT + DEFERRED + SWEEP_SLACK + 3
        while loris.state and time.monotonic() < deadline:
            loris.pump()
            time.sleep(0.02)
        left_open = len(loris.state)
    finally:
        loris.close()
    figures(kind=kind, attack=attack, connections=n, held_at_start=held_at_start,
            held_avg=round(sum(samples) / max(1, len(samples))),
            held_min=min(samples, default=0), closed_by_server=len(loris.ages),
            closed_while_probing=waves_closed, left_open=left_open,
            close_age_min_s=round(min(loris.ages, default=0), 2),
            close_age_max_s=round(max(loris.ages, default=0), 2),
            connect_errors=loris.connect_errors, requests=len(times) + len(failures),
            failures=len(failures), calm_p99_ms=ms(percentile(calm, 99)),
            p50_ms=ms(percentile(times, 50)) if times else None,
            p99_ms=ms(percentile(times, 99)) if times else None,
            max_ms=ms(max(times)) if times else None)
    assert not failures, failures[:10]
    assert max(times) < LATENCY_LIMIT, f"slowest request {max(times):.3f} s"
    assert len(times) >= 10, f"only {len(times)} requests in {PROBE_SECONDS} s"
    assert left_open == 0, f"{left_open} of {n} not closed by the server"
    assert waves_closed > 0, "no attacking connection was closed while probing"
    assert HEADER_TIMEOUT - 0.1 <= min(loris.ages), loris.ages[:20]
    late = DEFERRED if edge.http and attack == "silent" else 0.0
    assert max(loris.ages) <= HEADER_TIMEOUT + late + SWEEP_SLACK, sorted(loris.ages)[-20:]
    edge.unharmed()


# -- refused connections, all at once ------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", list(KINDS))
def test_garbage_handshakes(prefork_server, certs, tmp_path, figures, fd_limit, kind):
    edge = Edge(prefork_server, certs, tmp_path, kind)
    rng = random.Random(14)
    hello = certs.hello

    def record() -> bytes:      # one TLS handshake record of random bytes
        size = rng.randint(1, 2000)
        return b"\x16\x03" + bytes([rng.randint(0, 4)]) + struct.pack("!H", size) + \
            rng.randbytes(size)

    cases = {
        "random-after-0x16": [(b"\x16" + rng.randbytes(rng.randint(1, 600)), "idle")
                              for _ in range(GARBAGE)],
        "random-record": [(record(), "idle") for _ in range(GARBAGE)],
        "hello-cut-eof": [(hello[:rng.randint(1, len(hello) - 1)], "eof")
                          for _ in range(GARBAGE)],
        "hello-rst": [(hello, "rst") for _ in range(GARBAGE)],
        "hello-cut-rst": [(hello[:rng.randint(1, len(hello) - 1)], "rst")
                          for _ in range(GARBAGE)],
        "plain-http": [(b"GET / HTTP/1.1\r\nHost: edge\r\n\r\n", "idle")
                       for _ in range(GARBAGE)],
    }
    outcome = refusals(edge.address, cases, HEADER_TIMEOUT + SWEEP_SLACK + 2)
    figures(kind=kind, connections=sum(map(len, cases.values())), **summary(outcome))
    check_refused(edge, outcome, plain=("plain-http",))
    edge.unharmed()


# -- PROXY headers -------------------------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", list(KINDS))
def test_malformed_proxy_headers(prefork_server, certs, tmp_path, figures, fd_limit, kind):
    edge = Edge(prefork_server, certs, tmp_path, kind, proxied=True)
    rng = random.Random(14)
    # Random bytes that cannot start either version's header (P, CR).
    starts = [b for b in range(256) if b not in (0x0D, 0x50)]
    cases = {
        "random": [(bytes([rng.choice(starts)]) + rng.randbytes(rng.randint(0, 300)), "idle")
                   for _ in range(GARBAGE)],
        "v1-endless": [(b"PROXY UNKNOWN " + b"a" * rng.randint(100, 3000), "idle")
                       for _ in range(GARBAGE)],
        "v1-bad-address": [(b"PROXY TCP4 999.1.1.1 127.0.0.1 1 2\r\n" + certs.hello, "idle")
                           for _ in range(GARBAGE)],
        "v2-over-cap": [(PROXY_V2 + b"\x21\x11" + struct.pack("!H", rng.randint(4097, 65535))
                         + rng.randbytes(200), "idle") for _ in range(GARBAGE)],
        "v2-cut-eof": [(PROXY_V2[:rng.randint(1, 15)], "eof") for _ in range(GARBAGE)],
        "v1-cut-idle": [(GOOD_PROXY[:rng.randint(1, len(GOOD_PROXY) - 2)], "idle")
                        for _ in range(GARBAGE)],
        "v2-cut-idle": [(PROXY_V2 + b"\x21\x11\x00\x0c" + rng.randbytes(rng.randint(0, 11)),
                         "idle") for _ in range(GARBAGE)],
    }
    outcome = refusals(edge.address, cases, HEADER_TIMEOUT + SWEEP_SLACK + 2)
    figures(kind=kind, connections=sum(map(len, cases.values())), **summary(outcome))
    check_refused(edge, outcome)
    for name in ("random", "v1-endless", "v1-bad-address", "v2-over-cap", "v2-cut-eof"):
        slowest = max(t for _, _, t in outcome[name])
        assert slowest < HEADER_TIMEOUT - 0.5, f"{name}: refused only after {slowest:.2f} s"
    for name in ("v1-cut-idle", "v2-cut-idle"):
        quickest = min(t for _, _, t in outcome[name])
        assert quickest >= HEADER_TIMEOUT - 0.1, f"{name}: closed after {quickest:.2f} s"
    # A good header is believed still (so the refusals above were the parser's).
    edge.unharmed()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", list(KINDS))
def test_a_proxy_header_in_pieces(prefork_server, certs, tmp_path, figures, kind):
    """Regression: a header whose first piece was there when the connection was accepted
    used to wait for header_timeout (nothing watched the socket for the rest), and a
    piece then EOF too (see v2-cut-eof above)."""
    edge = Edge(prefork_server, certs, tmp_path, kind, proxied=True)
    times = []
    for cut in (6, 20, len(GOOD_PROXY) - 1):
        began = time.perf_counter()
        with socket.create_connection(edge.address, timeout=PROBE_TIMEOUT) as raw:
            raw.sendall(GOOD_PROXY[:cut])
            time.sleep(0.3)       # the worker has accepted it and read the first piece
            raw.sendall(GOOD_PROXY[cut:])
            with edge.client.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                if edge.http:
                    reply = exchange(tls, b"GET / HTTP/1.1\r\nHost: e\r\nConnection: close\r\n\r\n")
                    seen = json.loads(reply.partition(b"\r\n\r\n")[2])["remote_addr"]
                else:
                    tls.sendall(b"who\n")
                    seen = tls.makefile("rb").readline().split()[0].decode()
        times.append(time.perf_counter() - began)
        assert seen == "203.0.113.7"
    figures(kind=kind, pieces=len(times), max_s=round(max(times), 2))
    assert max(times) < 0.3 + LATENCY_LIMIT, times
    edge.unharmed()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
def test_a_late_client_hello_gets_what_is_left_of_header_timeout(prefork_server, certs,
                                                                 tmp_path, figures, kind):
    """A PROXY header at once (so the accept is at once, TCP_DEFER_ACCEPT or not), the
    first bytes of a ClientHello just before header_timeout, then nothing: closed
    header_timeout after the accept, as the edge promises (arrival.py)."""
    edge = Edge(prefork_server, certs, tmp_path, kind, proxied=True)
    began = time.monotonic()
    socks = [socket.create_connection(edge.address, timeout=PROBE_TIMEOUT) for _ in range(5)]
    closed = []
    try:
        for sock in socks:
            sock.sendall(GOOD_PROXY)
        time.sleep(HEADER_TIMEOUT - 0.4)
        for sock in socks:
            sock.sendall(certs.hello[:10])
        for sock in socks:
            try:
                while sock.recv(4096):
                    pass
            except OSError:
                pass
            closed.append(time.monotonic() - began)
    finally:
        for sock in socks:
            sock.close()
    figures(kind=kind, connections=len(socks), first_byte_at_s=HEADER_TIMEOUT - 0.4,
            closed_after_s=round(max(closed), 2))
    assert max(closed) <= HEADER_TIMEOUT + 0.8, closed
    edge.unharmed()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", list(KINDS))
def test_proxy_header_from_a_peer_not_allowed(prefork_server, certs, tmp_path, figures,
                                              kind):
    edge = Edge(prefork_server, certs, tmp_path, kind, "--proxy-protocol", "auto",
                "--proxy-allow-from", "10.0.0.0/8")
    v2 = (PROXY_V2 + b"\x21\x11\x00\x0c" + socket.inet_aton("203.0.113.7")
          + socket.inet_aton("127.0.0.1") + struct.pack("!HH", 40000, 443))
    cases = {"v1-before-tls": [(GOOD_PROXY + certs.hello, "idle")] * GARBAGE,
             "v2-before-tls": [(v2 + certs.hello, "idle")] * GARBAGE}
    outcome = refusals(edge.address, cases, HEADER_TIMEOUT + SWEEP_SLACK + 2)
    told = summary(outcome)
    # The PROXY line before the ClientHello is plain text on a TLS address: a 400 or a close.
    check_refused(edge, outcome, plain=tuple(cases))
    # Inside TLS, as the first bytes of the stream: an HTTP listener's parser refuses
    # them; a handler class gets them as data, and the socket's address.
    if edge.http:
        with edge.connect() as tls:
            reply = exchange(tls, GOOD_PROXY + b"GET / HTTP/1.1\r\nHost: edge\r\n\r\n")
        assert reply.startswith(b"HTTP/1.1 400 "), reply[:200]
        told["inside-tls"] = reply.split(b"\r\n", 1)[0].decode()
    else:
        seen = edge.ask(line=GOOD_PROXY)
        assert seen["remote_addr"] == "127.0.0.1", seen
        told["inside-tls"] = f"handler told {seen['remote_addr']}"
    figures(kind=kind, **told)
    assert edge.ask()["remote_addr"] == "127.0.0.1"
    assert all(call["remote_addr"] == "127.0.0.1" for call in edge.calls()), edge.calls()
    edge.unharmed()


# -- forwarded headers ---------------------------------------------------------------------

SPOOFS = {
    "xff": b"X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: http\r\n",
    "xff-chain": b"X-Forwarded-For: 203.0.113.7, 10.0.0.1\r\nX-Forwarded-Proto: http\r\n",
    "xff-trusted-looking": b"X-Forwarded-For: 10.1.2.3\r\n",
    "xff-repeated": b"X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-For: 10.0.0.1\r\n",
    "xff-odd": b"X-Forwarded-For: unknown, [::1]:80, 203.0.113.7:99\r\n",
    "forwarded": b"Forwarded: for=203.0.113.7;proto=http\r\n",
    "forwarded-chain": b'Forwarded: for=203.0.113.7, for="[2001:db8::1]:4711";proto=http, '
                       b"for=10.0.0.1\r\n",
    "both": b"Forwarded: for=203.0.113.7\r\nX-Forwarded-For: 198.51.100.1\r\n"
            b"X-Real-IP: 198.51.100.2\r\nX-Forwarded-Proto: http\r\n",
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", ["x-forwarded", "forwarded"])
@pytest.mark.parametrize("kind", ["sync-wsgi", "asyncio-asgi"])
def test_spoofed_forwarded_headers(prefork_server, certs, tmp_path, figures, kind, mode):
    edge = Edge(prefork_server, certs, tmp_path, kind, "--forwarded-allow-ips", "10.0.0.0/8",
                "--forwarded-headers", mode)
    seen = {name: edge.ask(headers=headers) for name, headers in SPOOFS.items()}
    figures(kind=kind, mode=mode, requests=len(seen),
            **{name: f"{s['remote_addr']} {s['scheme']}" for name, s in seen.items()})
    for name, told in seen.items():
        assert (told["remote_addr"], told["scheme"]) == ("127.0.0.1", "https"), (name, told)
    edge.unharmed()

