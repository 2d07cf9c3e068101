"""TLS end to end on every kind: Python's ssl, httpx, curl and openssl s_client against
trustme certificates; what the app is told (wsgi.url_scheme, HTTPS, SSL_*, the ASGI
scope's scheme and tls extension, a handler's SSLSocket); ALPN; optional client
certificates; plain and garbage bytes on a TLS address; --certfile alone."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import ssl
import subprocess
import time
from typing import List

import httpx
import pytest
import websockets.sync.client

from edge_helpers import (ASGI_KINDS, CLIENT_CN, KINDS, Certs, EdgeServed, Kind, ask,
                          client_context, connect, edge_server, info, reply_to,
                          request_bytes, until_closed)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

ECHO = "prefork.examples.echo:UpperEchoHandler"
WIRE_KINDS = [kind for kind in KINDS if kind.wire == "http"]


@pytest.fixture(scope="module", params=KINDS, ids=str)
def server(request, tmp_path_factory, certs) -> EdgeServed:
    """A plain and a TLS address on one master; client certificates optional."""
    with edge_server(tmp_path_factory.mktemp("tls"), request.param, "-b", "127.0.0.1:0",
                     "-b", "tls://127.0.0.1:0", *certs.mutual("optional")) as served:
        yield served


def _tls_answer(server: EdgeServed, certs: Certs, ident: str, **context) -> dict:
    with connect(server.tls, client_context(certs, **context)) as sock:
        answer = ask(server.kind, sock, ident)
        assert answer["client"] == ["127.0.0.1", sock.getsockname()[1]]
        return answer


def test_verified_tls_and_what_the_app_is_told(server, certs):
    answer = _tls_answer(server, certs, "verified")
    assert answer["scheme"] == "https"
    assert answer["tls_version"] == "TLSv1.3"
    assert answer["client_dn"] is None and answer["client_cert"] is None
    extra = answer["extra"]
    if server.kind.target.endswith(":wsgi"):
        assert extra["HTTPS"] == "on" and extra["SSL_PROTOCOL"] == "TLSv1.3"
        assert extra["SSL_CLIENT_VERIFY"] == "NONE" and extra["SSL_CIPHER"]
    elif server.kind.target.endswith(":asgi"):
        assert extra["tls_version"] == 0x0304 and extra["cipher_suite"] in (
            0x1301, 0x1302, 0x1303)
        assert extra["server_cert"] == certs.cert.read_text()
        assert extra["client_cert_chain"] == [] and extra["client_cert_name"] is None
    else:
        assert "SSLSocket" in extra["class"]     # a handler class is given an SSLSocket


def test_plain_address_on_the_same_master(server, certs):
    answer = info(server.kind, server.plain, "plain")
    assert answer["scheme"] == "http" and answer["tls_version"] is None
    assert answer["pid"] == _tls_answer(server, certs, "then-tls")["pid"]


def test_alpn_offers_http11_on_http_listeners_only(server, certs):
    with connect(server.tls, client_context(certs, alpn=("h2", "http/1.1"))) as sock:
        expected = "http/1.1" if server.kind.prefork_http else None
        assert sock.selected_alpn_protocol() == expected
        ask(server.kind, sock, "alpn")


def test_optional_client_certificate_reaches_the_app(server, certs):
    answer = _tls_answer(server, certs, "client-cert", client_cert=True)
    assert answer["client_dn"].startswith(f"CN={CLIENT_CN},")
    assert answer["client_cert"] == certs.client_pem()
    if server.kind.target.endswith(":wsgi"):
        assert answer["extra"]["SSL_CLIENT_VERIFY"] == "SUCCESS"
        assert "O=prefork edge CA" in answer["extra"]["SSL_CLIENT_I_DN"]
    if server.kind.target.endswith(":asgi"):
        assert answer["extra"]["client_cert_error"] is None


def test_plain_text_to_the_tls_address_never_reaches_the_app(server, certs):
    pid = server.worker()
    reply = reply_to(server.tls, request_bytes(server.kind, "plain-on-tls"))
    if server.kind.prefork_http:
        assert reply.startswith(b"HTTP/1.1 400 ") and b"TLS" in reply
    else:
        assert reply == b""
    assert _tls_answer(server, certs, "after-plain")["pid"] == pid
    assert not server.called("plain-on-tls")


@pytest.mark.parametrize("garbage", [b"\x16\x03\x01\x00\x08notahello" * 3,
                                     b"\x16\xff\xff\xff" + bytes(range(256)),
                                     b"\x16"], ids=["bad-record", "nonsense", "truncated"])
def test_garbage_handshakes_get_a_close_and_the_worker_lives(server, certs, garbage):
    pid = server.worker()
    with connect(server.tls) as sock:
        sock.sendall(garbage)
        if len(garbage) == 1:
            sock.shutdown(socket.SHUT_WR)       # a ClientHello cut short: the peer's EOF
        reply = until_closed(sock)
    assert not reply.startswith(b"HTTP") and len(reply) < 64    # at most a TLS alert
    assert _tls_answer(server, certs, "after-garbage")["pid"] == pid


def test_silent_connections_do_not_slow_a_real_client(server, certs):
    """200 connections that never send a ClientHello wait in the worker's loop (or in
    the kernel), not in the worker: a real client is served at once beside them."""
    with contextlib.ExitStack() as stack:
        for _ in range(200):
            stack.enter_context(connect(server.tls))
        started = time.monotonic()
        _tls_answer(server, certs, "beside-silent")
        assert time.monotonic() - started < 2.0     # a handshake's ms, with room for a busy box


def _s_client(address: tuple, certs: Certs, send: bytes, until: bytes) -> bytes:
    """openssl s_client verifying the server; what it printed once ``until`` came."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    proc = subprocess.Popen(["openssl", "s_client", "-connect", f"{address[0]}:{address[1]}",
                             "-CAfile", str(certs.ca_file), "-verify_return_error",
                             "-verify_ip", address[0], "-quiet"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        proc.stdin.write(send)
        proc.stdin.flush()
        out = b""
        deadline = time.monotonic() + 10
        while until not in out and time.monotonic() < deadline:
            chunk = proc.stdout.read1(65536)
            if not chunk:
                break
            out += chunk
        return out
    finally:
        proc.kill()
        proc.wait(5)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            stream.close()


@pytest.mark.parametrize("worker", ["sync", "thread"])
def test_certfile_alone_makes_the_tcp_address_tls(tmp_path, certs, worker):
    """The example handler behind --certfile and a plain-looking address: openssl
    s_client gets its echo; a plain client gets nothing back."""
    kind = Kind(f"echo-{worker}", ECHO, ("-k", worker), "line", False)
    with edge_server(tmp_path, kind, "-b", "127.0.0.1:0", *certs.args()) as served:
        assert served.tls is None
        assert b"HELLO OVER TLS\n" in _s_client(served.plain, certs, b"hello over tls\n",
                                                b"\n")
        with connect(served.plain) as sock:
            sock.sendall(b"hello in plain text\n")
            assert until_closed(sock) == b""


@pytest.fixture(scope="module", params=WIRE_KINDS, ids=str)
def alone(request, tmp_path_factory, certs) -> EdgeServed:
    """--certfile and a plain-looking TCP address: it speaks TLS."""
    with edge_server(tmp_path_factory.mktemp("alone"), request.param, "-b", "127.0.0.1:0",
                     *certs.args()) as served:
        yield served


def test_certfile_alone_with_s_client(alone, certs):
    out = _s_client(alone.plain, certs, request_bytes(alone.kind, "s_client"), b"}")
    assert out.startswith(b"HTTP/1.1 200") and b'"scheme": "https"' in out
    reply = reply_to(alone.plain, request_bytes(alone.kind, "plain"))
    assert reply.startswith(b"HTTP/1.1 400") if alone.kind.prefork_http else reply == b""
    assert not alone.called("plain")


def test_httpx_verifies_against_the_ca(alone, certs):
    url = f"https://127.0.0.1:{alone.plain[1]}/?id=httpx"
    trusting = ssl.create_default_context(cafile=str(certs.ca_file))
    with httpx.Client(verify=trusting, timeout=5) as client:
        response = client.get(url)
    assert response.status_code == 200 and response.json()["scheme"] == "https"
    with httpx.Client(timeout=5) as client:            # the system's CAs only
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            client.get(url)


def test_curl_verifies_against_the_ca(alone, certs):
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    url = f"https://127.0.0.1:{alone.plain[1]}/?id=curl"
    done = subprocess.run(["curl", "-sS", "--max-time", "5", "--cacert", str(certs.ca_file), url],
                          capture_output=True, timeout=10)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["scheme"] == "https"
    refused = subprocess.run(["curl", "-sS", "--max-time", "5", url], capture_output=True,
                             timeout=10)
    assert refused.returncode == 60, refused.stderr      # the peer's certificate not trusted


@pytest.mark.parametrize("kind", ASGI_KINDS, ids=str)
def test_websocket_over_tls_is_wss(tmp_path, certs, kind):
    with edge_server(tmp_path, kind, "-b", "127.0.0.1:0", "-b", "tls://127.0.0.1:0",
                     *certs.mutual("optional")) as served:
        seen: List[dict] = []
        for scheme, address, context in (
                ("wss", served.tls, client_context(certs, client_cert=True, alpn=())),
                ("ws", served.plain, None)):
            url = f"{scheme}://127.0.0.1:{address[1]}/socket?id={scheme}"
            with websockets.sync.client.connect(url, ssl=context, open_timeout=5) as ws:
                seen.append(json.loads(ws.recv(timeout=5)))
        secure, plain = seen
        assert secure["scheme"] == "wss" and plain["scheme"] == "ws"
        assert secure["tls_version"] == "TLSv1.3" and plain["tls_version"] is None
        assert secure["client_dn"].startswith(f"CN={CLIENT_CN},")
        assert secure["extra"]["client_cert_chain"][0] == certs.client_pem()


@pytest.fixture(scope="module", params=KINDS, ids=str)
def strict(request, tmp_path_factory, certs) -> EdgeServed:
    """Client certificates required, TLS 1.3 at least, 0.5 s to get through."""
    with edge_server(tmp_path_factory.mktemp("strict"), request.param, "-b", "tls://127.0.0.1:0",
                     *certs.mutual("required"), "--ssl-min-version", "TLSv1.3",
                     "--header-timeout", "0.5") as served:
        yield served


def test_required_client_certificate(strict, certs):
    # TLS 1.3: the client's side of the handshake is done before the server has
    # judged it; the refusal is an alert (or a reset) on the first read.
    assert reply_to(strict.tls, request_bytes(strict.kind, "no-client-cert"),
                    client_context(certs)) == b""
    answer = _tls_answer(strict, certs, "with-client-cert", client_cert=True)
    assert answer["client_dn"].startswith(f"CN={CLIENT_CN},")
    assert answer["client_cert"] == certs.client_pem()
    if strict.kind.target.endswith(":wsgi"):
        assert answer["extra"]["SSL_CLIENT_VERIFY"] == "SUCCESS"
        assert answer["extra"]["SSL_CLIENT_S_DN"] == answer["client_dn"]
    assert not strict.called("no-client-cert")


def test_minimum_version_refuses_a_tls12_client(strict, certs):
    pid = strict.worker()
    old = client_context(certs, client_cert=True, maximum=ssl.TLSVersion.TLSv1_2)
    # A protocol_version alert from the selector workers; asyncio's TLS transport
    # closes without sending its alert, so the client sees an EOF: refused all the same.
    with pytest.raises(ssl.SSLError, match="PROTOCOL_VERSION|UNSUPPORTED_PROTOCOL|EOF"):
        connect(strict.tls, old)
    assert _tls_answer(strict, certs, "tls13", client_cert=True)["pid"] == pid


def test_a_stalled_handshake_is_dropped_after_header_timeout(strict, certs):
    pid = strict.worker()
    with connect(strict.tls) as stalled:
        stalled.sendall(b"\x16\x03\x01\x02\x00\x01")     # a ClientHello's first bytes
        started = time.monotonic()
        assert _tls_answer(strict, certs, "beside-stalled", client_cert=True)["pid"] == pid
        assert until_closed(stalled) == b""
        assert time.monotonic() - started < 3.0
