"""The sans-IO half of WebSockets (prefork/servers/asgi/ws_protocol.py): no socket, no loop.

The handshake's checks and heads from parsed requests, the websocket scope
from an http scope, and Frames fed bytes directly.
"""

from __future__ import annotations

import struct
from typing import List

import pytest

from asgi_websocket_driver import HANDSHAKE, client_frame, close_payload
from prefork.servers.asgi.ws_protocol import (Frames, HandshakeError, accept_head,
                                              check_handshake, denial_head, websocket_scope)
from prefork.servers.http.parser import Request, RequestParser


def parse(head: bytes) -> Request:
    parser = RequestParser()
    parser.feed(head)
    request = parser.next_head()
    assert request is not None
    return request


def test_accept_head_answers_the_rfc_example_key() -> None:
    key = check_handshake(parse(HANDSHAKE))
    head = accept_head(key, "chat", [(b"x-a", b"1"), (b"Sec-WebSocket-Accept", b"forged")])
    assert head.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in head     # RFC 6455 1.3
    assert b"Sec-WebSocket-Protocol: chat\r\n" in head and b"x-a: 1\r\n" in head
    assert b"forged" not in head and head.endswith(b"\r\n\r\n")


@pytest.mark.parametrize("old, new, status", [
    (b"Upgrade: websocket", b"Upgrade: h2c", 400),
    (b"Connection: Upgrade", b"Connection: keep-alive", 400),
    (b"Sec-WebSocket-Version: 13", b"Sec-WebSocket-Version: 14", 426),
    (b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", b"Sec-WebSocket-Key: !!!!", 400),
    (b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", b"X-No-Key: 1", 400),
])
def test_handshake_errors(old: bytes, new: bytes, status: int) -> None:
    with pytest.raises(HandshakeError) as info:
        check_handshake(parse(HANDSHAKE.replace(old, new)))
    assert info.value.status == status
    assert info.value.response().startswith(b"HTTP/1.1 %d " % status)


def test_websocket_scope_from_an_https_scope() -> None:
    request = parse(HANDSHAKE.replace(b"\r\n\r\n", b"\r\nSec-WebSocket-Protocol: a, b\r\n"
                                      b"Sec-WebSocket-Protocol: c\r\n\r\n"))
    http = {"type": "http", "scheme": "https", "path": "/x", "raw_path": b"/x",
            "query_string": b"q=1", "root_path": "/api", "headers": [], "client": None,
            "server": ("h", 443), "extensions": {"tls": {"v": 1}, "http.response.pathsend": {}}}
    scope = websocket_scope(http, request)
    assert scope["type"] == "websocket" and scope["scheme"] == "wss"
    assert scope["subprotocols"] == ["a", "b", "c"] and "state" not in scope
    assert scope["extensions"] == {"tls": {"v": 1}, "websocket.http.response": {}}
    assert (scope["root_path"], scope["query_string"]) == ("/api", b"q=1")


def test_denial_head_framing() -> None:
    head, chunked = denial_head(404, [(b"content-length", b"3"), (b"Connection", b"keep-alive")])
    assert not chunked and head.startswith(b"HTTP/1.1 404 Not Found\r\n")
    assert b"keep-alive" not in head and head.endswith(b"Connection: close\r\n\r\n")
    head, chunked = denial_head(599, [])
    assert chunked and head.startswith(b"HTTP/1.1 599 \r\n")
    for status in (101, 99, "200"):
        with pytest.raises(ValueError):
            denial_head(status, [])      # type: ignore[arg-type]


def server_frames(data: bytes) -> List[tuple]:
    """Unmasked server frames as (opcode, payload)."""
    out = []
    while data:
        n = data[1] & 0x7F
        start = 2 + (2 if n == 126 else 8 if n == 127 else 0)
        if n >= 126:
            n = int.from_bytes(data[2:start], "big")
        out.append((data[0] & 0x0F, data[start:start + n]))
        data = data[start + n:]
    return out


def test_frames_fed_a_byte_at_a_time() -> None:
    frames = Frames(1 << 20)
    stream = (client_frame("né".encode(), 1, fin=False) + client_frame(b"\x00", 9)
              + client_frame("e ✓".encode(), 0) + client_frame(b"\x01\x02", 2))
    messages = []
    for i in range(len(stream)):
        messages += frames.receive(stream[i:i + 1])
    assert messages == [{"type": "websocket.receive", "text": "née ✓"},
                        {"type": "websocket.receive", "bytes": b"\x01\x02"}]
    assert server_frames(frames.data_to_send()[0]) == [(10, b"\x00")]    # the pong


def test_ping_payload_cleared_only_by_its_own_pong() -> None:
    frames = Frames(0)
    frames.ping()
    payload = frames.ping_payload
    assert server_frames(frames.data_to_send()[0]) == [(9, payload)]
    frames.receive(client_frame(b"other", 10))
    assert frames.ping_payload == payload
    frames.receive(client_frame(payload, 10))
    assert frames.ping_payload is None


def test_close_handshake_started_by_the_server() -> None:
    frames = Frames(0)
    frames.send_text("bye")
    frames.close(1012, "r" * 200)                  # a reason too long is cut
    data, eof = frames.data_to_send()
    sent = server_frames(data)
    assert sent[0] == (1, b"bye") and sent[1][0] == 8 and len(sent[1][1]) == 125
    assert not eof and not frames.open
    messages = frames.receive(client_frame(close_payload(1012), 8))
    assert messages == [{"type": "websocket.disconnect", "code": 1012, "reason": ""}]
    assert frames.data_to_send() == (b"", True)     # the server closes the TCP connection


def test_failure_is_reported_once() -> None:
    frames = Frames(10)
    messages = frames.receive(client_frame(b"x" * 11, 2))
    assert [(m["type"], m["code"]) for m in messages] == [("websocket.disconnect", 1009)]
    data, eof = frames.data_to_send()
    opcode, payload = server_frames(data)[0]
    assert opcode == 8 and struct.unpack("!H", payload[:2])[0] == 1009 and eof
    assert frames.receive(client_frame(b"more", 1)) == []
