"""The ASGI WebSocket session over time: keepalive pings, a client that vanishes,
the worker going away (1012) and a client that never answers our close, flow
control both ways, frames sent before the 101 (held within a bound).
"""

from __future__ import annotations

import asyncio
from typing import Any, Dict, List

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from asgi_websocket_driver import (HANDSHAKE, RawClient, client_frame, close_payload, run, serve,
                                   server)
from prefork.servers.asgi import websocket
from prefork.servers.asgi.websocket import QUEUE_HIGH
from prefork.servers.asgi.ws_protocol import WebSocketClosed


def waiting_app(log: List[Any]):
    """Accepts, then logs what it receives until the end."""
    async def app(scope, receive, send):
        await receive()
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            log.append(message)
            if message["type"] == "websocket.disconnect":
                break
        try:
            await send({"type": "websocket.send", "text": "anyone?"})
        except WebSocketClosed as exc:
            log.append(exc)
    return app


def test_server_pings_and_drops_a_client_that_never_answers() -> None:
    log: List[Any] = []

    async def main() -> None:
        protocol, sock = await serve(waiting_app(log), server(ws_ping_interval=0.05,
                                                                ws_ping_timeout=0.1))
        client = await RawClient.connect(sock)
        await client.handshake()
        assert (await client.frame())[0] == 9            # a ping, which we leave unanswered
        await protocol.session.done                      # dropped after the timeout
    run(main(), timeout=5)
    assert log[0] == {"type": "websocket.disconnect", "code": 1006, "reason": ""}
    assert isinstance(log[1], WebSocketClosed)


def test_a_client_that_answers_pings_stays_connected() -> None:
    async def main() -> None:
        protocol, sock = await serve(waiting_app([]), server(ws_ping_interval=0.05,
                                                             ws_ping_timeout=0.04))
        client = await RawClient.connect(sock)
        await client.handshake()
        for _ in range(5):
            opcode, payload = await client.frame()
            assert opcode == 9
            client.send(client_frame(payload, 10))      # the pong
        assert not protocol.session.done.done()
        client.send(client_frame(close_payload(1000), 8))
        assert await client.close_frame() == (1000, "")
    run(main(), timeout=5)


def test_client_vanishing_is_1006_and_later_sends_raise() -> None:
    log: List[Any] = []

    async def main() -> None:
        protocol, sock = await serve(waiting_app(log), server())
        client = await RawClient.connect(sock)
        await client.handshake()
        client.send(client_frame(b"hi", 1))
        await asyncio.sleep(0.05)
        client.writer.transport.abort()
        await protocol.session.done
    run(main())
    assert log[0] == {"type": "websocket.receive", "text": "hi"}
    assert log[1]["code"] == 1006
    assert isinstance(log[2], WebSocketClosed) and isinstance(log[2], OSError)


def test_going_away_closes_with_1012_and_a_clean_close_handshake() -> None:
    log: List[Any] = []

    async def main() -> None:
        protocol, sock = await serve(waiting_app(log), server())
        client = await RawClient.connect(sock)
        await client.handshake()
        await asyncio.sleep(0.01)
        protocol.session.going_away()
        assert await client.close_frame() == (1012, "service restart")
        assert not protocol.session.done.done()          # waits for our answer
        client.send(client_frame(close_payload(1012), 8))
        assert await client.at_eof()                     # a FIN after the handshake, no reset
        await protocol.session.done
    run(main())
    assert log[0] == {"type": "websocket.disconnect", "code": 1012, "reason": "service restart"}
    assert isinstance(log[1], WebSocketClosed)


def test_going_away_with_the_websockets_client() -> None:
    async def main() -> None:
        protocol, sock = await serve(waiting_app([]), server())
        async with connect("ws://test/", sock=sock) as ws:
            protocol.session.going_away()
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
            assert info.value.rcvd.code == 1012 and info.value.sent.code == 1012
        await protocol.session.done
    run(main())


def test_going_away_during_the_handshake_closes_right_after_the_accept() -> None:
    async def app(scope, receive, send):
        await receive()
        await asyncio.sleep(0.05)
        await send({"type": "websocket.accept"})
        assert (await receive())["code"] == 1012

    async def main() -> None:
        protocol, sock = await serve(app, server())
        client = await RawClient.connect(sock)
        client.send(HANDSHAKE)
        await protocol.ready
        protocol.session.going_away()
        await client.reader.readuntil(b"\r\n\r\n")
        assert await client.close_frame() == (1012, "service restart")
        client.send(client_frame(close_payload(1012), 8))
        await protocol.session.done
    run(main())


def test_frames_sent_with_the_handshake_reach_the_app_after_the_accept() -> None:
    log: List[Any] = []

    async def main() -> None:
        protocol, sock = await serve(waiting_app(log), server())
        client = await RawClient.connect(sock)
        await client.handshake(extra=client_frame(b"eager", 1) + client_frame(b"\x01", 2))
        client.send(client_frame(close_payload(1000), 8))
        await protocol.session.done
    run(main())
    assert [m.get("text") or m.get("bytes") for m in log[:2]] == ["eager", b"\x01"]


def test_reading_pauses_while_the_app_does_not_receive() -> None:
    received: List[Dict[str, Any]] = []
    go = None

    async def app(scope, receive, send):
        await receive()
        await send({"type": "websocket.accept"})
        await go.wait()
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            received.append(message)

    async def main() -> None:
        nonlocal go
        go = asyncio.Event()
        protocol, sock = await serve(app, server())
        client = await RawClient.connect(sock)
        await client.handshake()
        count = 1000
        for i in range(count):
            client.send(client_frame(b"%d" % i + b"." * 1000, 2))
        transport = protocol.transport
        for _ in range(200):
            if not transport.is_reading():
                break
            await asyncio.sleep(0.01)
        assert not transport.is_reading()
        queued = len(protocol.session._inbox)
        assert QUEUE_HIGH <= queued < count      # bounded: the rest waits in the sockets
        go.set()
        while len(received) < count:
            await asyncio.sleep(0.01)
        assert transport.is_reading()
        client.send(client_frame(close_payload(1000), 8))
        await protocol.session.done
    run(main())
    assert [m["bytes"].split(b".")[0] for m in received] == [b"%d" % i for i in range(1000)]


def test_send_waits_while_the_client_does_not_read() -> None:
    sent: List[int] = []
    size, count = 256 << 10, 40        # 10 MiB: more than the socket buffers hold

    async def app(scope, receive, send):
        await receive()
        await send({"type": "websocket.accept"})
        for i in range(count):
            await send({"type": "websocket.send", "bytes": bytes([i]) * size})
            sent.append(i)
        await send({"type": "websocket.close"})
        await receive()

    async def main() -> None:
        protocol, sock = await serve(app, server())
        client = await RawClient.connect(sock)
        await client.handshake()
        await asyncio.sleep(0.2)
        stalled = len(sent)
        assert stalled < count, "send never waited"
        buffered = protocol.transport.get_write_buffer_size()
        assert buffered < 4 * size          # not the whole stream held in user space
        for i in range(count):
            opcode, payload = await client.frame()
            assert opcode == 2 and payload == bytes([i]) * size
        assert (await client.close_frame())[0] == 1000
        client.send(client_frame(close_payload(1000), 8))
        await protocol.session.done
    run(main(), timeout=30)
    assert sent == list(range(count))


def test_a_client_that_never_answers_our_close_is_dropped_at_the_deadline(monkeypatch) -> None:
    monkeypatch.setattr(websocket, "CLOSE_TIMEOUT", 0.1)
    log: List[Any] = []

    async def main() -> None:
        protocol, sock = await serve(waiting_app(log), server())
        client = await RawClient.connect(sock)
        await client.handshake()
        await protocol.ready
        protocol.session.going_away()
        assert await client.close_frame() == (1012, "service restart")
        await protocol.session.done                      # no answer sent: the deadline ends it
    run(main(), timeout=5)
    assert log[0]["code"] == 1012


def test_bytes_sent_before_the_accept_are_bounded_then_delivered() -> None:
    received: List[Any] = []
    count = 300                                        # 300 KiB: beyond EARLY_LIMIT

    async def app(scope, receive, send):
        await receive()
        await asyncio.sleep(0.2)                        # the client keeps sending meanwhile
        await send({"type": "websocket.accept"})
        while len(received) < count:
            received.append((await receive())["bytes"])

    async def main() -> None:
        protocol, sock = await serve(app, server())
        client = await RawClient.connect(sock)
        client.send(HANDSHAKE + b"".join(client_frame(bytes([i % 256]) * 1024, 2)
                                         for i in range(count)))
        await asyncio.sleep(0.1)
        assert not protocol.transport.is_reading()     # paused with the early bytes held
        assert len(protocol.session._early) <= websocket.EARLY_LIMIT + (256 << 10)   # + one read
        await client.reader.readuntil(b"\r\n\r\n")
        while len(received) < count:
            await asyncio.sleep(0.01)
        client.send(client_frame(close_payload(1000), 8))
        await protocol.session.done
    run(main())
    assert received == [bytes([i % 256]) * 1024 for i in range(count)]


def test_pongs_unread_while_the_app_is_slow_do_not_drop_the_client() -> None:
    received: List[Any] = []
    count = 2000

    async def app(scope, receive, send):
        await receive()
        await send({"type": "websocket.accept"})
        await asyncio.sleep(0.5)              # ten ping timeouts without reading a message
        while len(received) < count:
            received.append(await receive())

    async def main() -> None:
        protocol, sock = await serve(app, server(ws_ping_interval=0.05, ws_ping_timeout=0.05))
        client = await RawClient.connect(sock)
        await client.handshake()
        client.send(b"".join(client_frame(b"." * 1024, 2) for _ in range(count)))

        async def answer_pings() -> None:
            while True:
                opcode, payload = await client.frame()
                if opcode == 9:
                    client.send(client_frame(payload, 10))
        answering = asyncio.ensure_future(answer_pings())
        while len(received) < count:
            assert not protocol.session.done.done(), received[-1:]
            await asyncio.sleep(0.01)
        answering.cancel()
    run(main())
    bad = [(i, m) for i, m in enumerate(received) if m["type"] != "websocket.receive"]
    assert not bad, bad[:1]


def test_going_away_while_reading_is_paused_still_ends_cleanly() -> None:
    async def app(scope, receive, send):
        await receive()
        await send({"type": "websocket.accept"})
        await asyncio.sleep(30)                         # never takes a message

    async def main() -> None:
        protocol, sock = await serve(app, server())
        client = await RawClient.connect(sock)
        await client.handshake()
        client.send(b"".join(client_frame(b"." * 1024, 2) for _ in range(1000)))
        while protocol.transport.is_reading():
            await asyncio.sleep(0.01)
        protocol.session.going_away()
        assert await client.close_frame() == (1012, "service restart")
        client.send(client_frame(close_payload(1012), 8))   # behind the unread messages
        assert await client.at_eof()                        # read through them: a FIN
        protocol.session._task.cancel()                     # the app sleeps on
        await protocol.session.done
    run(main())


def test_going_away_after_a_delay_keeps_the_websocket_working_until_then() -> None:
    async def main() -> None:
        protocol, sock = await serve(waiting_app([]), server())
        async with connect("ws://test/", sock=sock) as ws:
            loop = asyncio.get_running_loop()
            asked = loop.time()
            protocol.session.going_away(0.3)
            protocol.session.going_away(5.0)           # a second call does not move it
            await ws.send("still here")
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
            assert info.value.rcvd.code == 1012 and 0.25 < loop.time() - asked < 2
        await protocol.session.done
    run(main())
