"""The edge's bounds and endings: worker_connections over connections in their TLS
handshake or PROXY header, and the close_notify that ends a TLS connection.

A handler class's connection takes a thread only once it is through its
handshake; until then it is parked in the loop, and the parked ones count
toward ``worker_connections`` as HTTP connections do: past it the worker
stops accepting, and the rest wait in the kernel's accept queue (seen with
``ss``) instead of costing file descriptors.
"""

from __future__ import annotations

import shutil
import socket
import subprocess

import pytest

from edge_helpers import (KINDS, ask, client_context, connect, edge_server, make_certs,
                          request_bytes)
from harness import wait_until

pytestmark = pytest.mark.integration

HANDLER = next(kind for kind in KINDS if kind.name == "handler-thread")


def accept_queue(port: int) -> int:
    """The listening socket's Recv-Q (connections waiting for accept), as ss shows it."""
    out = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True,
                         text=True, timeout=5).stdout.split()
    return int(out[1]) if len(out) > 1 else 0


@pytest.mark.timeout(60)
def test_silent_tls_connections_past_worker_connections_wait_in_the_backlog(tmp_path):
    if shutil.which("ss") is None:
        pytest.skip("ss (iproute2) is not installed: the accept queue cannot be read")
    certs = make_certs(tmp_path)
    with edge_server(tmp_path, HANDLER, "-b", "tls://127.0.0.1:0", *certs.args(),
                     "--worker-connections", "4", "--header-timeout", "1") as served:
        host, port = served.tls
        silent = [socket.create_connection((host, port), timeout=5) for _ in range(10)]
        try:
            # Four are parked in their handshake; the other six are never accepted.
            wait_until(lambda: accept_queue(port) == 6, 5, "6 connections in the backlog")
            # A real client waits its turn behind them: served once header_timeout
            # has freed room for it (three rounds of 4, here).
            with connect((host, port), client_context(certs), timeout=20) as sock:
                assert ask(HANDLER, sock, "after-the-flood")["client"][0] == "127.0.0.1"
        finally:
            for sock in silent:
                sock.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS, ids=str)
def test_a_tls_connection_ends_with_close_notify(tmp_path, kind):
    """The server's last word is a close_notify alert, not a bare TCP close: a client
    that refuses ragged EOFs reads to the end without an error (RFC 8446 6.1)."""
    certs = make_certs(tmp_path)
    with edge_server(tmp_path, kind, "-b", "tls://127.0.0.1:0", *certs.args()) as served:
        raw = socket.create_connection(served.tls, timeout=10)
        with client_context(certs).wrap_socket(raw, server_hostname="127.0.0.1",
                                               suppress_ragged_eofs=False) as sock:
            sock.sendall(request_bytes(kind, "bye"))
            if kind.wire == "line":
                assert sock.recv(4096)                 # the answer; then our close_notify
                sock.unwrap()      # ends the handler, and waits for the server's own
                return
            received = b""
            while True:
                data = sock.recv(65536)               # SSLEOFError on a bare TCP close
                if not data:
                    break
                received += data
            assert kind.wire == "line" or b"200 OK" in received
