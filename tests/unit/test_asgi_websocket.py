"""The ASGI WebSocket session: handshake, denials, messages, close codes.

Each test runs a real asyncio loop with the session on one end of a
socketpair and the ``websockets`` client, or raw frames, on the other
(tests/unit/asgi_websocket_driver.py).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Dict, List

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from asgi_websocket_driver import (ACCEPT, HANDSHAKE, RawClient, client_frame, close_payload, run,
                                   serve, server)
from prefork.servers.asgi.ws_protocol import WebSocketClosed


def echo_app(log: List[Dict[str, Any]]):
    async def app(scope, receive, send):
        log.append(scope)
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            log.append(message)
            if message["type"] == "websocket.disconnect":
                return
            await send({"type": "websocket.send", "text": message.get("text"),
                        "bytes": message.get("bytes")})
    return app


def test_echo_text_and_binary_then_client_close() -> None:
    log: List[Dict[str, Any]] = []
    access: List[tuple] = []
    srv = server(access_log=type("Log", (), {"write": lambda self, *a: access.append(a)})())

    async def main() -> None:
        protocol, sock = await serve(echo_app(log), srv)
        async with connect("ws://test/chat?room=1", sock=sock) as ws:
            await ws.send("héllo")
            assert await ws.recv() == "héllo"
            await ws.send(b"\x00\x01\xff")
            assert await ws.recv() == b"\x00\x01\xff"
            await ws.close(4000, "bye")
        await protocol.session.done
    run(main())
    scope = log[0]
    assert scope["type"] == "websocket" and scope["scheme"] == "ws"
    assert scope["path"] == "/chat" and scope["query_string"] == b"room=1"
    assert scope["subprotocols"] == [] and scope["state"] == {"from": "lifespan"}
    assert scope["extensions"] == {"websocket.http.response": {}}    # http.* ones dropped
    assert (b"upgrade", b"websocket") in scope["headers"]
    assert log[-1] == {"type": "websocket.disconnect", "code": 4000, "reason": "bye"}
    assert srv.started == [1] and srv.done == [1]       # counted as one request
    assert access[0][2] == 101 and access[0][1].target == "/chat?room=1"


def test_subprotocol_and_headers_on_accept() -> None:
    async def app(scope, receive, send):
        assert scope["subprotocols"] == ["chat", "superchat"]
        await receive()
        await send({"type": "websocket.accept", "subprotocol": "superchat",
                    "headers": [(b"x-extra", b"1"), (b"connection", b"dropped")]})
        await receive()

    async def main() -> None:
        _, sock = await serve(app, server())
        async with connect("ws://test/", sock=sock, subprotocols=["chat", "superchat"]) as ws:
            assert ws.subprotocol == "superchat"
            assert ws.response.headers["x-extra"] == "1"
            assert ws.response.headers["connection"] == "Upgrade"
    run(main())


def test_close_before_accept_is_403() -> None:
    async def app(scope, receive, send):
        await receive()
        await send({"type": "websocket.close"})

    async def main() -> None:
        protocol, sock = await serve(app, server())
        with pytest.raises(InvalidStatus) as info:
            await connect("ws://test/", sock=sock)
        assert info.value.response.status_code == 403
        await protocol.session.done
    run(main())


def test_custom_denial_response_in_parts() -> None:
    async def app(scope, receive, send):
        await receive()
        await send({"type": "websocket.http.response.start", "status": 401,
                    "headers": [(b"content-type", b"text/plain"), (b"www-authenticate", b"Basic")]})
        await send({"type": "websocket.http.response.body", "body": b"who ", "more_body": True})
        await send({"type": "websocket.http.response.body", "body": b"are you?"})
        with pytest.raises(WebSocketClosed):
            await send({"type": "websocket.http.response.body", "body": b"more"})

    async def main() -> bytes:
        _, sock = await serve(app, server())
        client = await RawClient.connect(sock)
        client.send(HANDSHAKE)
        return await client.reader.read()
    reply = run(main())
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 401 Unauthorized\r\n")
    assert b"\r\nwww-authenticate: Basic" in head and b"Connection: close" in head
    assert b"Transfer-Encoding: chunked" in head
    assert body == b"4\r\nwho \r\n8\r\nare you?\r\n0\r\n\r\n"


@pytest.mark.parametrize("head, status", [
    (HANDSHAKE.replace(b"Version: 13", b"Version: 8"), 426),
    (HANDSHAKE.replace(b"dGhlIHNhbXBsZSBub25jZQ==", b"short"), 400),
    (HANDSHAKE.replace(b"HTTP/1.1", b"HTTP/1.0"), 400),
])
def test_invalid_handshake_is_answered_without_the_app(head: bytes, status: int) -> None:
    called: List[int] = []

    async def app(scope, receive, send):
        called.append(1)

    async def main() -> bytes:
        protocol, sock = await serve(app, server())
        client = await RawClient.connect(sock)
        client.send(head)
        reply = await client.reader.read()
        await protocol.session.done
        return reply
    reply = run(main())
    assert reply.startswith(b"HTTP/1.1 %d " % status) and not called
    if status == 426:
        assert b"Sec-WebSocket-Version: 13\r\n" in reply


def test_fragmented_messages_are_joined_around_a_ping() -> None:
    log: List[Dict[str, Any]] = []

    async def main() -> None:
        protocol, sock = await serve(echo_app(log), server())
        client = await RawClient.connect(sock)
        head = await client.handshake()
        assert head.startswith(b"HTTP/1.1 101 ") and ACCEPT in head
        text = "fragmentiert ✓".encode()
        # The ✓'s three bytes split across frames: decoding must wait for the rest.
        client.send(client_frame(text[:14], 1, fin=False) + client_frame(b"", 9)
                    + client_frame(text[14:16], 0, fin=False) + client_frame(text[16:], 0))
        assert await client.frame() == (10, b"")                  # the pong, first
        assert await client.frame() == (1, text)
        client.send(client_frame(b"ab", 2, fin=False) + client_frame(b"cd", 0))
        assert await client.frame() == (2, b"abcd")
        client.send(client_frame(close_payload(1000), 8))
        assert await client.close_frame() == (1000, "")
        assert await client.at_eof()
        await protocol.session.done
    run(main())
    assert log[1] == {"type": "websocket.receive", "text": "fragmentiert ✓"}
    assert log[-1]["code"] == 1000


def test_websockets_client_fragments_and_ping() -> None:
    async def main() -> None:
        _, sock = await serve(echo_app([]), server())
        async with connect("ws://test/", sock=sock) as ws:
            await ws.send(["one ", "two ", "three"])
            assert await ws.recv() == "one two three"
            pong = await ws.ping(b"are you there")
            await asyncio.wait_for(pong, 2)
    run(main())


def test_app_close_code_and_reason_reach_the_client() -> None:
    got: List[Dict[str, Any]] = []

    async def app(scope, receive, send):
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": 4001, "reason": "done here"})
        with pytest.raises(WebSocketClosed, match="after the WebSocket closed"):
            await send({"type": "websocket.send", "text": "too late"})
        got.append(await receive())

    async def main() -> None:
        protocol, sock = await serve(app, server())
        ws = await connect("ws://test/", sock=sock)
        with pytest.raises(ConnectionClosed) as info:
            await ws.recv()
        assert (info.value.rcvd.code, info.value.rcvd.reason) == (4001, "done here")
        await protocol.session.done
    run(main())
    assert got[0]["type"] == "websocket.disconnect" and got[0]["code"] == 4001


def test_empty_close_frame_is_1005() -> None:
    log: List[Dict[str, Any]] = []

    async def main() -> None:
        _, sock = await serve(echo_app(log), server())
        client = await RawClient.connect(sock)
        await client.handshake()
        client.send(client_frame(b"", 8))
        assert await client.frame() == (8, b"")          # echoed as it came
        assert await client.at_eof()
    run(main())
    assert log[-1]["code"] == 1005


@pytest.mark.parametrize("frames, code", [
    ([client_frame(b"caf\xc3", 1)], 1007),                            # cut UTF-8
    ([client_frame(b"ok", 1, fin=False), client_frame(b"\xff", 0)], 1007),
    ([client_frame(close_payload(1000, "") + b"\xff", 8)], 1007),     # bad close reason
    ([client_frame(b"unmasked", 1, masked=False)], 1002),
    ([client_frame(b"x", 1, rsv=0x40)], 1002),                        # no extension agreed
    ([client_frame(b"x", 0)], 1002),                                  # continuation of nothing
    ([client_frame(b"x" * 2000, 2)], 1009),
    ([client_frame(b"x" * 600, 2, fin=False), client_frame(b"x" * 600, 0)], 1009),
])
def test_bad_frames_fail_the_connection(frames: List[bytes], code: int) -> None:
    log: List[Dict[str, Any]] = []

    async def main() -> None:
        protocol, sock = await serve(echo_app(log), server(ws_max_size=1024))
        client = await RawClient.connect(sock)
        await client.handshake()
        client.send(b"".join(frames))
        assert (await client.close_frame())[0] == code
        assert await client.at_eof()
        await protocol.session.done
    run(main())
    assert log[-1]["type"] == "websocket.disconnect" and log[-1]["code"] == code


def test_app_error_before_accept_is_500(caplog: pytest.LogCaptureFixture) -> None:
    async def app(scope, receive, send):
        raise ValueError("boom before accept")

    async def main() -> bytes:
        _, sock = await serve(app, server())
        client = await RawClient.connect(sock)
        client.send(HANDSHAKE)
        return await client.reader.read()
    with caplog.at_level(logging.ERROR, logger="prefork"):
        reply = run(main())
    assert reply.startswith(b"HTTP/1.1 500 ")
    assert "boom before accept" in caplog.text and "GET /chat?room=1" in caplog.text


def test_app_error_after_accept_is_1011(caplog: pytest.LogCaptureFixture) -> None:
    async def app(scope, receive, send):
        await receive()
        await send({"type": "websocket.accept"})
        await receive()
        raise ValueError("boom after accept")

    async def main() -> None:
        _, sock = await serve(app, server())
        async with connect("ws://test/", sock=sock) as ws:
            await ws.send("trigger")
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
            assert info.value.rcvd.code == 1011
    with caplog.at_level(logging.ERROR, logger="prefork"):
        run(main())
    assert "boom after accept" in caplog.text


@pytest.mark.parametrize("first, expect", [
    (None, b"HTTP/1.1 500 "),                                  # returned without answering
    ({"type": "websocket.send", "text": "early"}, b"HTTP/1.1 500 "),   # not allowed yet
])
def test_app_that_does_not_answer_the_handshake_gets_500(first: Any, expect: bytes) -> None:
    async def app(scope, receive, send):
        await receive()
        if first is not None:
            await send(first)

    async def main() -> bytes:
        _, sock = await serve(app, server())
        client = await RawClient.connect(sock)
        client.send(HANDSHAKE)
        return await client.reader.read()
    assert run(main()).startswith(expect)


def test_app_returning_after_accept_closes_with_1000() -> None:
    async def app(scope, receive, send):
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "bytes": b"last"})

    async def main() -> None:
        protocol, sock = await serve(app, server())
        async with connect("ws://test/", sock=sock) as ws:
            assert await ws.recv() == b"last"
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
            assert info.value.rcvd.code == 1000
        await protocol.session.done
    run(main())


def test_header_injection_in_the_accept_is_refused_with_500() -> None:
    async def app(scope, receive, send):
        await receive()
        await send({"type": "websocket.accept", "headers": [(b"x-a", b"1\r\nSet-Cookie: evil")]})

    async def main() -> bytes:
        _, sock = await serve(app, server())
        client = await RawClient.connect(sock)
        client.send(HANDSHAKE)
        return await client.reader.read()
    reply = run(main())
    assert reply.startswith(b"HTTP/1.1 500 ") and b"evil" not in reply


def test_a_close_code_no_endpoint_may_send_is_an_app_error_1011() -> None:
    async def app(scope, receive, send):
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": 1005})

    async def main() -> None:
        protocol, sock = await serve(app, server())
        client = await RawClient.connect(sock)
        await client.handshake()
        assert (await client.close_frame())[0] == 1011
        client.send(client_frame(close_payload(1011), 8))
        await protocol.session.done
    run(main())
