"""Running WebSocket sessions in-process: a real loop, a real socketpair, real transports.

:class:`UpgradingProtocol` does for a test what the ASGI HTTP adapter does
in a worker: it parses the request head with the real parser, builds the
HTTP scope, calls :func:`prefork.servers.asgi.websocket.upgrade` with the
bytes after the head, then forwards the transport's events to the session.
The client end is the ``websockets`` library's client or raw frames
(:class:`RawClient`), over the other socket of the pair.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
from types import SimpleNamespace
from typing import Any, Awaitable, Callable, List, Optional, Tuple

from prefork.servers.asgi.websocket import WebSocketSession, upgrade
from prefork.servers.http.parser import RequestParser

HANDSHAKE = (b"GET /chat?room=1 HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\n"
             b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
             b"Sec-WebSocket-Version: 13\r\n\r\n")
ACCEPT = b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"    # RFC 6455 1.3's example


def run(coro: Awaitable[Any], timeout: float = 10.0) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, timeout)
    return asyncio.run(bounded())


def server(**settings: Any) -> SimpleNamespace:
    """The ASGI server object as the session reads it; it stands for the worker's
    loop too, counting the requests started and (in ``done``) finished."""
    done: List[int] = []
    started: List[int] = []
    base = dict(ws_max_size=16 << 20, ws_ping_interval=0.0, ws_ping_timeout=0.0,
                access_log=None, request_started=lambda session: started.append(1),
                request_finished=lambda session: done.append(1), done=done, started=started)
    base.update(settings)
    return SimpleNamespace(**base)


class UpgradingProtocol(asyncio.Protocol):
    def __init__(self, app: Callable, server: Any) -> None:
        self.app, self.server = app, server
        self.buf = b""
        self.session: Optional[WebSocketSession] = None
        self.transport: Any = None
        self.ready = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.session is not None:
            self.session.data_received(data)
            return
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        parser = RequestParser()
        parser.feed(self.buf[:end + 4])
        request = parser.next_head()
        assert request is not None and request.upgrade
        target = request.target
        path, _, query = target.partition("?")
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                 "method": request.method, "scheme": "http", "path": path,
                 "raw_path": path.encode(), "query_string": query.encode(), "root_path": "",
                 "headers": [(n.lower().encode("latin-1"), v.encode("latin-1"))
                             for n, v in request.headers],
                 "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
                 "state": {"from": "lifespan"}, "extensions": {"http.response.trailers": {}}}
        self.session = upgrade(request, scope, self.app, self.transport, self.buf[end + 4:],
                               self.server, self.server)
        self.ready.set_result(self.session)

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        if self.session is not None:
            self.session.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.session is not None:
            self.session.pause_writing()

    def resume_writing(self) -> None:
        if self.session is not None:
            self.session.resume_writing()


async def serve(app: Callable, srv: Any) -> Tuple[UpgradingProtocol, socket.socket]:
    """The server end on one socket of a pair; returns it and the client's socket."""
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    theirs.setblocking(False)
    protocol = UpgradingProtocol(app, srv)
    await asyncio.get_running_loop().connect_accepted_socket(lambda: protocol, ours)
    return protocol, theirs


def client_frame(payload: bytes, opcode: int, fin: bool = True, masked: bool = True,
                 rsv: int = 0) -> bytes:
    """One client-to-server frame (RFC 6455 5.2), masked as the RFC requires unless told."""
    head = bytearray([(0x80 if fin else 0) | rsv | opcode])
    n = len(payload)
    bit = 0x80 if masked else 0
    if n < 126:
        head.append(bit | n)
    elif n < 1 << 16:
        head += struct.pack("!BH", bit | 126, n)
    else:
        head += struct.pack("!BQ", bit | 127, n)
    if not masked:
        return bytes(head) + payload
    key = os.urandom(4)
    return bytes(head) + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def close_payload(code: int, reason: str = "") -> bytes:
    return struct.pack("!H", code) + reason.encode()


class RawClient:
    """A client that writes raw bytes and reads the server's head and frames."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, sock: socket.socket) -> "RawClient":
        return cls(*await asyncio.open_connection(sock=sock))

    async def handshake(self, head: bytes = HANDSHAKE, extra: bytes = b"") -> bytes:
        self.writer.write(head + extra)
        return await self.reader.readuntil(b"\r\n\r\n")

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def frame(self) -> Tuple[int, bytes]:
        """The next server frame: (opcode, payload); servers never mask (5.1)."""
        b0, b1 = await self.reader.readexactly(2)
        assert not b1 & 0x80, "a server frame is masked"
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", await self.reader.readexactly(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", await self.reader.readexactly(8))[0]
        return b0 & 0x0F, await self.reader.readexactly(n)

    async def close_frame(self) -> Tuple[int, str]:
        """Skips pings; the close frame's code and reason."""
        while True:
            opcode, payload = await self.frame()
            if opcode == 8:
                return struct.unpack("!H", payload[:2])[0], payload[2:].decode()

    async def at_eof(self) -> bool:
        """True on a clean FIN; a reset raises ConnectionResetError."""
        return await self.reader.read() == b""
