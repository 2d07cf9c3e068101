"""The edge tests' common parts: the kinds of target, trustme certificates, clients.

Every kind is served by an app of tests/apps/edge_apps.py that answers the
same JSON (the client address, the scheme, the TLS details it was given),
so a test is written once and parametrized over :data:`KINDS`: handler
classes (a line protocol and an http.server handler) on the sync and thread
workers, WSGI on both, ASGI on asyncio's loop and on uvloop.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

import pytest
import trustme

from harness import PreforkProcess, wait_until
from http_helpers import CALLS_ENV, build, read_response

Headers = Sequence[Tuple[str, str]]


@dataclass(frozen=True)
class Kind:
    """A target and its worker.  ``wire``: "line" or "http", how it is asked;
    ``prefork_http``: prefork's own HTTP server (WSGI, ASGI) runs in front of the
    app, so there are 400s, ALPN, forwarded headers and an access log."""

    name: str
    target: str
    args: Tuple[str, ...]
    wire: str
    prefork_http: bool

    def __str__(self) -> str:
        return self.name


KINDS = [
    Kind("handler-sync", "edge_apps:PeerLineHandler", ("-k", "sync"), "line", False),
    Kind("handler-thread", "edge_apps:PeerLineHandler", ("-k", "thread"), "line", False),
    Kind("http.server-sync", "edge_apps:PeerHTTPHandler", ("-k", "sync"), "http", False),
    Kind("http.server-thread", "edge_apps:PeerHTTPHandler", ("-k", "thread"), "http", False),
    Kind("wsgi-sync", "edge_apps:wsgi", ("-k", "sync"), "http", True),
    Kind("wsgi-thread", "edge_apps:wsgi", ("-k", "thread"), "http", True),
    Kind("asgi-asyncio", "edge_apps:asgi", ("--loop", "asyncio"), "http", True),
    Kind("asgi-uvloop", "edge_apps:asgi", ("--loop", "uvloop"), "http", True),
]
HTTP_KINDS = [kind for kind in KINDS if kind.prefork_http]
ASGI_KINDS = [kind for kind in KINDS if kind.target.endswith(":asgi")]
CLIENT_CN = "edge-test-client"


@dataclass
class Certs:
    """A trustme CA, a server certificate for 127.0.0.1 / ::1 / localhost and a client
    certificate (certificate and key in one file), written to ``directory``."""

    ca: trustme.CA
    directory: Path
    ca_file: Path
    cert: Path
    key: Path
    client: Path

    def args(self) -> List[str]:
        return ["--certfile", str(self.cert), "--keyfile", str(self.key)]

    def mutual(self, reqs: str) -> List[str]:
        return [*self.args(), "--ca-certs", str(self.ca_file), "--cert-reqs", reqs]

    def client_pem(self) -> str:
        text = self.client.read_text()
        end = text.index("-----END CERTIFICATE-----") + len("-----END CERTIFICATE-----")
        return text[text.index("-----BEGIN CERTIFICATE-----"):end] + "\n"


def make_certs(directory: Path, name: str = "edge") -> Certs:
    ca = trustme.CA(organization_name=f"prefork {name} CA")
    server = ca.issue_cert("127.0.0.1", "::1", "localhost")
    client = ca.issue_cert("client.example", common_name=CLIENT_CN)
    certs = Certs(ca, directory, directory / f"{name}-ca.pem", directory / f"{name}-cert.pem",
                  directory / f"{name}-key.pem", directory / f"{name}-client.pem")
    ca.cert_pem.write_to_path(str(certs.ca_file))
    server.cert_chain_pems[0].write_to_path(str(certs.cert))
    server.private_key_pem.write_to_path(str(certs.key))
    client.private_key_and_cert_chain_pem.write_to_path(str(certs.client))
    return certs


def client_context(certs: Certs, *, client_cert: bool = False,
                   maximum: Optional[ssl.TLSVersion] = None,
                   alpn: Sequence[str] = ("http/1.1",)) -> ssl.SSLContext:
    """A verifying client context that trusts only the test CA."""
    context = ssl.create_default_context(cafile=str(certs.ca_file))
    if client_cert:
        context.load_cert_chain(str(certs.client))
    if maximum is not None:
        context.maximum_version = maximum
    if alpn:
        context.set_alpn_protocols(list(alpn))
    return context


def connect(address: tuple, tls: Optional[ssl.SSLContext] = None, preface: bytes = b"",
            timeout: float = 5.0) -> socket.socket:
    """A connection; ``preface`` (a PROXY header) is sent first, then the TLS handshake."""
    sock = socket.create_connection(address, timeout)
    if preface:
        sock.sendall(preface)
    if tls is not None:
        try:
            sock = tls.wrap_socket(sock, server_hostname=address[0])
        except BaseException:
            sock.close()
            raise
    return sock


def request_bytes(kind: Kind, ident: str, headers: Headers = ()) -> bytes:
    if kind.wire == "line":
        return f"info {ident}\n".encode()
    return build("GET", f"/?id={ident}", [("Connection", "close"), *headers])


def ask(kind: Kind, sock: socket.socket, ident: str, headers: Headers = ()) -> dict:
    """One question on an open connection, the app's JSON answer."""
    sock.sendall(request_bytes(kind, ident, headers))
    with sock.makefile("rb") as reader:
        if kind.wire == "line":
            line = reader.readline()
            assert line, "the connection closed without an answer"
            return json.loads(line)
        response = read_response(reader)
    assert response is not None and response.status == 200, response
    return response.json()


def info(kind: Kind, address: tuple, ident: str, tls: Optional[ssl.SSLContext] = None,
         preface: bytes = b"", headers: Headers = ()) -> dict:
    with connect(address, tls, preface) as sock:
        return ask(kind, sock, ident, headers)


def until_closed(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """Everything the server sends until it closes (a reset counts as a close)."""
    sock.settimeout(timeout)
    data = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return data
            data += chunk
    except (ConnectionResetError, ssl.SSLError):
        return data


def reply_to(address: tuple, data: bytes, tls: Optional[ssl.SSLContext] = None) -> bytes:
    """``data`` sent on a new connection; what the server sends until it closes.  A
    server may refuse while the bytes are still going out: that is not an error here."""
    with connect(address, tls) as sock:
        try:
            sock.sendall(data)
        except OSError:                 # a reset, an SSLError: refused already
            pass
        return until_closed(sock)


class EdgeServed:
    """A running server of one kind, the file its app records calls in."""

    def __init__(self, proc: PreforkProcess, calls: Path, kind: Kind) -> None:
        self.proc, self.calls, self.kind = proc, calls, kind
        # Read once it is ready: every address is in the log by then.
        bound = [line for line in proc.log().splitlines() if "listening at " in line]
        plain = any("listening at tls://" not in line for line in bound)
        self.plain = proc.address if plain else None
        tls = any("listening at tls://" in line for line in bound)
        self.tls = proc.tls_addresses()[0] if tls else None

    def called(self, ident: str) -> bool:
        try:
            lines = self.calls.read_text().splitlines()
        except FileNotFoundError:
            return False
        return any(json.loads(line).get("id") == ident for line in lines if line.strip())

    def worker(self) -> int:
        (pid,) = self.proc.live_workers()
        return pid

    def log_line(self, text: str, timeout: float = 5.0) -> str:
        """The first log line (the access log goes to the same file) containing ``text``."""
        def found() -> List[str]:
            return [line for line in self.proc.log().splitlines() if text in line]
        wait_until(lambda: bool(found()), timeout, f"a log line with {text!r}")
        return found()[0]


@contextlib.contextmanager
def edge_server(workdir: Path, kind: Kind, *args: str) -> Iterator[EdgeServed]:
    """One worker serving ``kind`` with ``args`` (addresses, TLS, PROXY ...); the test
    skips when the kind needs uvloop and it is not installed (it is optional)."""
    if "uvloop" in kind.args:
        pytest.importorskip("uvloop")
    calls = workdir / "calls.jsonl"
    proc = PreforkProcess(["serve", kind.target, *kind.args, "-w", "1", *args], workdir,
                          {CALLS_ENV: str(calls)})
    try:
        proc.wait_ready()
        yield EdgeServed(proc, calls, kind)
    finally:
        proc.cleanup()


# -- PROXY protocol headers, written by hand as a load balancer would ----------------

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def proxy_v1(source: Tuple[str, int], destination: Tuple[str, int]) -> bytes:
    family = "TCP6" if ":" in source[0] else "TCP4"
    return (f"PROXY {family} {source[0]} {destination[0]} {source[1]} {destination[1]}\r\n"
            .encode())


def proxy_v2(source: Optional[Tuple[str, int]], destination: Optional[Tuple[str, int]],
             tlvs: bytes = b"") -> bytes:
    """A v2 header: PROXY over TCP with the addresses, or LOCAL when ``source`` is None."""
    if source is None or destination is None:
        return V2_SIGNATURE + bytes([0x20, 0x00]) + struct.pack("!H", len(tlvs)) + tlvs
    six = ":" in source[0]
    family = socket.AF_INET6 if six else socket.AF_INET
    block = (socket.inet_pton(family, source[0]) + socket.inet_pton(family, destination[0])
             + struct.pack("!HH", source[1], destination[1]) + tlvs)
    return V2_SIGNATURE + bytes([0x21, 0x21 if six else 0x11]) + struct.pack("!H", len(block)) \
        + block


def tlv(kind: int, value: bytes) -> bytes:
    return struct.pack("!BH", kind, len(value)) + value
