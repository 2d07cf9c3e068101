"""target.check_kinds: which targets may serve stream and datagram bind addresses."""

import http.server
import socketserver

import pytest

from prefork import target
from prefork.errors import TargetError

SPEC = target.parse("mod:thing")
TCP, UDP = ("127.0.0.1:8000", False), ("udp://127.0.0.1:9000", True)


def wsgi_app(environ, start_response):
    return []


class Plain(socketserver.BaseRequestHandler):
    pass


class Stream(socketserver.StreamRequestHandler):
    pass


class Datagram(socketserver.DatagramRequestHandler):
    pass


@pytest.mark.parametrize("obj, binds", [
    (wsgi_app, [TCP]),
    (Stream, [TCP]),
    (http.server.SimpleHTTPRequestHandler, [TCP]),
    (Datagram, [UDP, ("unix-dgram:/run/x.sock", True)]),
    (Plain, [TCP, UDP]),       # may test isinstance(self.request, tuple)
])
def test_matching_kinds_pass(obj, binds):
    target.check_kinds(SPEC, obj, binds)


@pytest.mark.parametrize("obj, binds, address, why", [
    (wsgi_app, [TCP, UDP], "udp://127.0.0.1:9000", "a WSGI application needs a stream socket"),
    (Stream, [UDP], "udp://127.0.0.1:9000", "Stream is a socketserver.StreamRequestHandler"),
    (http.server.BaseHTTPRequestHandler, [("unix-dgram:/x", True)], "unix-dgram:/x",
     "BaseHTTPRequestHandler is a socketserver.StreamRequestHandler"),
    (Datagram, [UDP, TCP], "127.0.0.1:8000",
     "Datagram is a socketserver.DatagramRequestHandler, which reads datagrams"),
])
def test_a_mismatch_names_target_and_address(obj, binds, address, why):
    with pytest.raises(TargetError) as caught:
        target.check_kinds(SPEC, obj, binds)
    assert str(caught.value).startswith(f"target 'mod:thing' cannot serve {address}: ")
    assert why in str(caught.value)
    assert caught.value.status == 3
