"""HandlerServer in-process: socketserver's template methods around one handler."""

from __future__ import annotations

import logging
import socket
import socketserver

import pytest

from prefork.servers.stream import HandlerServer


class Failing(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        raise RuntimeError("boom")


class Echo(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        self.wfile.write(self.rfile.readline().upper())


@pytest.fixture
def listener6():
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    try:
        sock.bind(("::1", 0))
    except OSError as exc:
        sock.close()
        pytest.skip(f"cannot bind [::1]: {exc}")
    yield sock
    sock.close()


def test_handler_error_names_an_ipv6_client_with_brackets(listener6, caplog) -> None:
    """Regression: the log line said '::1:5000', which reads as a host with no port."""
    server = HandlerServer(listener6, Failing)
    a, b = socket.socketpair()
    with caplog.at_level(logging.ERROR, logger="prefork"):
        server.serve_request(a, ("::1", 5000, 0, 0))
    b.close()
    assert "error in Failing while serving [::1]:5000" in caplog.text
    assert "boom" in caplog.text


def test_serve_request_runs_the_handler_and_shuts_down(listener6) -> None:
    server = HandlerServer(listener6, Echo)
    a, b = socket.socketpair()
    b.sendall(b"hi\n")
    server.serve_request(a, ("::1", 5000, 0, 0))
    assert b.recv(100) == b"HI\n"
    assert b.recv(100) == b""       # SHUT_WR, then closed
    b.close()
    assert a.fileno() == -1
    assert server.server_address[0] == "::1" and server.fileno() == listener6.fileno()


def test_describe_names_handler_and_client(listener6) -> None:
    server = HandlerServer(listener6, Echo)
    assert server.describe(("::1", 80, 0, 0))() == "Echo for [::1]:80"
