"""Apps that say what they learnt about their connection: the edge tests (TLS, PROXY,
forwarded headers; tests/integration/test_tls.py and its neighbours).

Every kind answers the same JSON object, so one test reads them all alike:
``pid``, ``client`` ([host, port]), ``scheme``, ``tls_version`` ("TLSv1.3"
or None), ``client_dn`` (the client certificate's subject, RFC 4514, or
None), ``client_cert`` (its PEM, or None), ``id`` and ``extra`` (what the
kind says in its own words: the WSGI environ's SSL_* variables, the ASGI
tls extension).  Each request is first recorded as a "call" line in
$PREFORK_TEST_CALLS (see wsgiapps.record) with its ``id``: how a test shows
that a request it expected refused never reached the app.

- ``PeerLineHandler``: a handler class; each line ``info ID`` is answered
  with one JSON line.
- ``PeerHTTPHandler``: an http.server handler; ``GET /?id=ID``.
- ``wsgi``: a WSGI app; ``GET /?id=ID``.
- ``asgi``: an ASGI app; ``GET /?id=ID``, and a WebSocket that sends the
  JSON as its first message.
"""

import http.server
import json
import os
import socketserver
import ssl
from urllib.parse import parse_qs, urlsplit

from wsgiapps import record

VERSIONS = {0x0303: "TLSv1.2", 0x0304: "TLSv1.3"}


def _answer(client, scheme, tls_version, client_dn, client_cert, ident, extra=None):
    info = {"pid": os.getpid(), "client": list(client) if client else None, "scheme": scheme,
            "tls_version": tls_version, "client_dn": client_dn, "client_cert": client_cert,
            "id": ident, "extra": extra or {}}
    record("call", id=ident, client=info["client"], scheme=scheme)
    return json.dumps(info).encode()


def _subject(peer):
    """getpeercert()'s subject, most specific first, as RFC 4514 writes it (no escaping:
    the test certificates need none)."""
    rdns = reversed(peer.get("subject", ())) if peer else ()
    return ",".join("+".join(f"{_SHORT.get(k, k)}={v}" for k, v in rdn) for rdn in rdns) or None


_SHORT = {"commonName": "CN", "organizationName": "O", "organizationalUnitName": "OU"}


def _socket_answer(sock, client, ident):
    """The answer of a handler class: all it knows is its socket."""
    if not isinstance(sock, ssl.SSLSocket):
        return _answer(client, "http", None, None, None, ident)
    der = sock.getpeercert(binary_form=True)
    return _answer(client, "https", sock.version(), _subject(sock.getpeercert()),
                   ssl.DER_cert_to_PEM_cert(der) if der else None, ident,
                   {"alpn": sock.selected_alpn_protocol(), "class": type(sock).__name__})


class PeerLineHandler(socketserver.StreamRequestHandler):
    """``info ID`` -> a JSON line; anything else -> ``? LINE`` (how a PROXY header
    that was not believed shows up)."""

    def handle(self) -> None:
        for line in self.rfile:
            if line.startswith(b"info "):
                ident = line[5:].strip().decode("latin-1")
                self.wfile.write(_socket_answer(self.request, self.client_address, ident) + b"\n")
            else:
                self.wfile.write(b"? " + line)


class PeerHTTPHandler(http.server.BaseHTTPRequestHandler):
    """GET /?id=ID -> the JSON answer, keep-alive."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        ident = parse_qs(urlsplit(self.path).query).get("id", [""])[-1]
        body = _socket_answer(self.request, self.client_address, ident)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args) -> None:     # noqa: A002 (http.server's name)
        pass


def wsgi(environ, start_response):
    ident = parse_qs(environ.get("QUERY_STRING", "")).get("id", [""])[-1]
    port = environ.get("REMOTE_PORT")
    extra = {k: v for k, v in environ.items() if k.startswith("SSL_") or k == "HTTPS"}
    body = _answer([environ.get("REMOTE_ADDR"), int(port) if port else None],
                   environ["wsgi.url_scheme"], environ.get("SSL_PROTOCOL"),
                   environ.get("SSL_CLIENT_S_DN"), environ.get("SSL_CLIENT_CERT"), ident, extra)
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]


def _scope_answer(scope):
    ident = parse_qs(scope["query_string"].decode("latin-1")).get("id", [""])[-1]
    tls = (scope.get("extensions") or {}).get("tls")
    if tls is None:
        return _answer(scope.get("client"), scope["scheme"], None, None, None, ident)
    chain = tls.get("client_cert_chain") or []
    return _answer(scope.get("client"), scope["scheme"], VERSIONS.get(tls.get("tls_version")),
                   tls.get("client_cert_name"), chain[0] if chain else None, ident, tls)


async def asgi(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            kind = message["type"].rsplit(".", 1)[-1]
            await send({"type": f"lifespan.{kind}.complete"})
            if kind == "shutdown":
                return
    if scope["type"] == "websocket":
        await receive()                                   # websocket.connect
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": _scope_answer(scope).decode()})
        await receive()                                   # the client's close
        return
    body = _scope_answer(scope)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})
