"""The WebSocket settings and bookkeeping, through a real ``prefork serve`` asyncio worker.

``--ws-max-size`` closes a connection whose message is too large with 1009;
``--ws-ping-interval`` and ``--ws-ping-timeout`` ping a client and drop the
one that never answers (seen by a raw-socket client that reads frames
itself and does not pong); an open WebSocket shows its worker busy in
``prefork status``, and each session counts toward ``max_requests``.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import time

import pytest

from harness import PreforkProcess, run_prefork, wait_until
from test_websocket_worker import start, uri

sync_client = pytest.importorskip("websockets.sync.client")
from websockets.exceptions import ConnectionClosed  # noqa: E402

pytestmark = pytest.mark.integration


def raw_handshake(address: tuple) -> socket.socket:
    """A WebSocket opened by hand: the 101 is read, and nothing will ever answer a ping."""
    sock = socket.create_connection(address, timeout=5)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                  f"Sec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101 "), head
    return sock


def read_frame(sock: socket.socket) -> tuple:
    """(opcode, payload) of the next unmasked server frame; (None, b"") at EOF."""
    first = _exactly(sock, 2)
    if not first:
        return None, b""
    opcode, length = first[0] & 0x0F, first[1] & 0x7F
    if length == 126:
        length = struct.unpack("!H", _exactly(sock, 2))[0]
    return opcode, _exactly(sock, length) if length else b""


def _exactly(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        more = sock.recv(count - len(data))
        if not more:
            return b""
        data += more
    return data


@pytest.mark.timeout(30)
def test_ws_max_size_closes_a_larger_message_with_1009(tmp_path):
    proc = start(tmp_path, "--ws-max-size", "1024")
    try:
        with sync_client.connect(uri(proc, "/echo"), open_timeout=5, max_size=None) as ws:
            ws.send("x" * 1024)
            assert ws.recv(timeout=5) == "x" * 1024          # at the limit: fine
            ws.send("x" * 1025)
            with pytest.raises(ConnectionClosed) as info:
                ws.recv(timeout=5)
            assert info.value.rcvd.code == 1009
        assert proc.wait_for(r"raw app saw disconnect 1009")
    finally:
        proc.cleanup()


@pytest.mark.timeout(30)
def test_ws_ping_settings_ping_and_drop_a_client_that_never_pongs(tmp_path):
    proc = start(tmp_path, "--ws-ping-interval", "0.3", "--ws-ping-timeout", "0.5")
    try:
        with raw_handshake(proc.address) as sock:
            sent = time.monotonic()
            opcode, payload = read_frame(sock)
            assert opcode == 0x9 and payload                 # a ping, about 0.3 s in
            assert time.monotonic() - sent < 3
            # Not answered: a close frame with 1011, then the connection ends.
            opcode, payload = read_frame(sock)
            assert opcode == 0x8 and struct.unpack("!H", payload[:2])[0] == 1011
            assert read_frame(sock) == (None, b"")
        assert proc.wait_for(r"no pong within 0.5 s, closing")
    finally:
        proc.cleanup()


@pytest.mark.timeout(30)
def test_a_client_that_pongs_is_kept(tmp_path):
    proc = start(tmp_path, "--ws-ping-interval", "0.2", "--ws-ping-timeout", "0.3")
    try:
        with sync_client.connect(uri(proc, "/echo"), open_timeout=5) as ws:    # it answers pings
            deadline = time.monotonic() + 1.5                        # several intervals
            while time.monotonic() < deadline:
                ws.send("still here")
                assert ws.recv(timeout=5) == "still here"
                time.sleep(0.1)
    finally:
        proc.cleanup()


def status(proc: PreforkProcess, control: str) -> dict:
    result = run_prefork(["status", "--json", "--control-socket", control], proc.workdir)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.timeout(40)
def test_an_open_websocket_is_busy_and_counts_toward_max_requests(tmp_path):
    control = str(tmp_path / "control.sock")
    proc = start(tmp_path, "--control-socket", control, "--max-requests", "2")
    try:
        with sync_client.connect(uri(proc, "/echo"), open_timeout=5) as ws:
            ws.send("pid")
            first = int(ws.recv(timeout=5))
            (worker,) = status(proc, control)["workers"]
            assert worker["pid"] == first and worker["busy"] is True
            # What it runs, as top and /status show it (show_requests is on by default).
            assert worker["doing"].startswith('"GET /echo HTTP/1.1" WebSocket from 127.0.0.1:')
            assert worker["doing_for"] >= 0
        wait_until(lambda: status(proc, control)["workers"][0]["requests"] == 1, 10,
                   "the closed WebSocket counted as one request")
        assert status(proc, control)["workers"][0]["busy"] is False
        with sync_client.connect(uri(proc, "/echo"), open_timeout=5) as ws:
            ws.send("bye")
            assert ws.recv(timeout=5) == "bye"
        # The second session reached max_requests: the worker is replaced.
        proc.wait_workers(lambda pids: pids and first not in pids)
        with sync_client.connect(uri(proc, "/echo"), open_timeout=5) as ws:
            ws.send("pid")
            assert int(ws.recv(timeout=5)) != first
    finally:
        proc.cleanup()
