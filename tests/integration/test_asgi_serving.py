"""The asyncio worker on what the other kinds serve too: unix sockets, worker_connections.

Real ``prefork serve`` processes; waits on log lines and responses.
"""

from __future__ import annotations

import json
import select
import socket

import pytest

from http_helpers import CALLS_ENV, Conn, read_response

pytestmark = pytest.mark.integration


@pytest.mark.timeout(30)
def test_an_asgi_app_on_a_unix_socket(prefork_server, tmp_path):
    path = tmp_path / "app.sock"
    proc = prefork_server("serve", "asgiapps:raw", "-b", f"unix:{path}", "-w", "1",
                          env={CALLS_ENV: str(tmp_path / "calls.jsonl")})
    proc.wait_ready()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(path))
        s.sendall(b"GET /echo?via=unix HTTP/1.1\r\nHost: t\r\n\r\n")
        with s.makefile("rb") as reader:
            seen = json.loads(read_response(reader).body)
    assert seen["server"] == [str(path), None]
    assert seen["client"] is None
    assert seen["query_string"] == "via=unix"


@pytest.mark.timeout(30)
def test_worker_connections_hold_new_clients_in_the_backlog(prefork_server, tmp_path):
    proc = prefork_server("serve", "asgiapps:raw", "-b", "127.0.0.1:0", "-w", "1",
                          "--worker-connections", "2", "--keepalive", "30",
                          env={CALLS_ENV: str(tmp_path / "calls.jsonl")})
    proc.wait_ready()
    first, second = Conn(proc.address), Conn(proc.address)
    try:
        for conn in (first, second):
            assert conn.request("GET", "/hello").status == 200   # both stay open, idle
        third = Conn(proc.address)
        try:
            third.send(b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n")
            # It waits in the kernel's queue: the worker is full.
            assert select.select([third.sock], [], [], 0.8)[0] == []
            first.close()                 # room again: the worker accepts it
            assert third.response().body == b"Hello, world!"
        finally:
            third.close()
    finally:
        first.close()
        second.close()
