"""One request's ASGI exchange: the app's ``receive`` and ``send``, over its connection.

A :class:`Cycle` holds what one request's app task sees: the request body
as it arrives (a queue the connection fills, bounded by pausing the
transport), and the response as the app sends it, framed here
(:mod:`.response`) and handed to the connection (:mod:`.http`), which
passes it to the HTTP protocol and the transport.

``receive()`` gives ``http.request`` messages (``more_body`` until the body
ended), then waits until the response is done or the client went, and then
gives ``http.disconnect``.  Its first call asks the protocol for the body,
which is when a ``100 Continue`` goes out if the client waits for one.
``send()`` after the client went raises :class:`ClientDisconnected` (an
OSError, as ASGI spec 2.4 asks), and waits while the transport is above
its high-water mark, so a slow reader slows the app instead of filling
memory.
"""

from __future__ import annotations

import asyncio
import collections
import os
import traceback
from typing import Any, Dict, List, Optional

from ...addresses import client
from ..http.parser import Request
from ..http.response import LAST_CHUNK, chunk
from .response import Framing, Start, accepts_trailers, frame, parse_start, trailer_block

BODY_HIGH = 256 * 1024    # request body bytes queued for the app before reading pauses


class ClientDisconnected(OSError):
    """``send()`` on a connection the client has closed."""


def _disconnect() -> Dict[str, Any]:
    return {"type": "http.disconnect"}


class Cycle:
    """The app side of one request; see the module docstring."""

    __slots__ = ("conn", "request", "scope", "started", "keep_alive", "chunks", "pending",
                 "body_open", "body_returned", "pulled", "disconnected", "peer_closed", "response_done",
                 "start", "framing", "code", "body_bytes", "body_ended", "file", "task", "_waiter")

    def __init__(self, conn: Any, request: Request, scope: Dict[str, Any], body: bool,
                 keep_alive: bool, started: float) -> None:
        self.conn = conn
        self.request = request
        self.scope = scope
        self.started = started
        self.keep_alive = keep_alive       # the protocol's word; a stop may take it back
        self.chunks: "collections.deque[bytes]" = collections.deque()
        self.pending = 0                   # bytes in chunks
        self.body_open = body              # more of the request body may come
        self.body_returned = False         # receive() gave more_body=False
        self.pulled = False                # receive() asked the protocol for the body
        self.disconnected = False
        self.peer_closed = False           # EOF from the client: it will read, not send
        self.response_done = False
        self.start: Optional[Start] = None
        self.framing: Optional[Framing] = None    # set when the head is written
        self.code = 0
        self.body_bytes = 0
        self.body_ended = False            # the last body message came (trailers may follow)
        self.file: Any = None              # the open file of a pathsend
        self.task: Optional[asyncio.Task] = None    # the app's, for request_timeout
        self._waiter: Optional[asyncio.Future] = None

    # -- what the connection calls -----------------------------------------

    def body_chunk(self, data: bytes) -> None:
        self.chunks.append(data)
        self.pending += len(data)
        self.wake()

    def body_end(self) -> None:
        self.body_open = False
        self.wake()

    def finished(self) -> None:
        self.response_done = True
        self.wake()

    def disconnect(self) -> None:
        self.disconnected = True
        self.wake()

    def peer_gone(self) -> None:
        """The client closed its side after its request: for the app, it has gone
        (``http.disconnect`` once the body is read), though the response may
        still be written to a client that only half-closed."""
        self.peer_closed = True
        self.wake()

    def wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    @property
    def head_sent(self) -> bool:
        return self.framing is not None

    # -- receive --------------------------------------------------------------

    async def receive(self) -> Dict[str, Any]:
        while True:
            if self.disconnected or self.response_done:
                return _disconnect()
            if self.chunks:
                data = self.chunks.popleft()
                self.pending -= len(data)
                more = bool(self.chunks) or self.body_open
                if not more:
                    self.body_returned = True
                elif self.pending < BODY_HIGH:
                    self.conn.body_taken(self)
                return {"type": "http.request", "body": data, "more_body": more}
            if not self.body_open:
                if not self.body_returned:
                    self.body_returned = True
                    return {"type": "http.request", "body": b"", "more_body": False}
                if self.peer_closed:
                    return _disconnect()
            elif not self.pulled:
                self.pulled = True
                self.conn.pull(self)       # may send 100 Continue; may queue body bytes
                continue
            else:
                self.conn.body_taken(self)
            await self._wait()

    async def _wait(self) -> None:
        waiter = self._waiter     # shared: two tasks may wait (a disconnect listener)
        if waiter is None or waiter.done():
            waiter = self._waiter = self.conn.loop.create_future()
        await waiter

    # -- send -----------------------------------------------------------------

    async def send(self, message: Dict[str, Any]) -> None:
        if self.disconnected:
            raise ClientDisconnected("the client closed the connection")
        kind = message["type"]
        if self.response_done:
            raise RuntimeError(f"ASGI message {kind!r} after the response was complete")
        if kind == "http.response.start":
            if self.start is not None:
                raise RuntimeError("http.response.start sent twice")
            self.start = parse_start(message)
            self.code = self.start.code
            return
        if self.start is None:
            raise RuntimeError(f"ASGI message {kind!r} before http.response.start")
        if kind == "http.response.body":
            if self.body_ended:
                raise RuntimeError("http.response.body after the last one")
            body = message.get("body", b"")
            if type(body) is not bytes:
                body = bytes(body)
            more = bool(message.get("more_body", False))
            await self._out(self._body(body, more), not more and not self.start.trailers)
        elif kind == "http.response.trailers":
            if not self.start.trailers or not self.body_ended:
                raise RuntimeError("http.response.trailers without trailers: True in "
                                   "http.response.start, or before the last body message")
            more = bool(message.get("more_trailers", False))
            data = b""
            if not more and self.framing.chunked:
                # Fields the client did not ask for (TE: trailers) are dropped; and
                # with several trailers messages only the last one's are sent.
                fields = message.get("headers", ()) if accepts_trailers(self.request) else ()
                data = trailer_block(fields)
            await self._out(data, not more)
        elif kind == "http.response.pathsend":
            await self._pathsend(message["path"])
        else:
            raise RuntimeError(f"unexpected ASGI message type {kind!r}")

    def _head(self, total: Optional[int]) -> bytes:
        self.framing = framing = frame(self.start, self.request, self.keep_alive, total)
        self.keep_alive = framing.keep_alive
        return framing.head

    def _body(self, body: bytes, more: bool) -> bytes:
        out = b""
        if self.framing is None:
            out = self._head(None if more else len(body))
        framing = self.framing
        if framing.no_body:
            body = b""
        elif framing.length is not None:
            room = framing.length - self.body_bytes
            if len(body) > room:
                body = body[:room]     # never more than the Content-Length declared
        self.body_bytes += len(body)
        if not more:
            self.body_ended = True
            if framing.length is not None and self.body_bytes < framing.length \
                    and not framing.no_body:
                self.keep_alive = False    # short: only the close can tell the client
        if framing.chunked:
            if body:
                body = chunk(body)
            if not more and not self.start.trailers:
                body += LAST_CHUNK
        return out + body if out else body

    async def _out(self, data: bytes, done: bool) -> None:
        conn = self.conn
        conn.respond(self, data, done)
        if done:
            self.response_done = True
        await conn.drained(self)

    async def _pathsend(self, path: str) -> None:
        """The whole body from a file, with sendfile where the event loop can."""
        if self.body_ended or self.framing is not None:
            raise RuntimeError("http.response.pathsend after body messages")
        self.file = open(path, "rb")
        try:
            size = os.fstat(self.file.fileno()).st_size
            head = self._head(size)
            framing = self.framing
            count = size if framing.length is None else min(size, framing.length)
            if framing.no_body:
                count = 0
            if count < (framing.length or 0):
                self.keep_alive = False
            self.body_bytes = count
            self.body_ended = True
            if framing.chunked:     # trailers asked for: the file cannot carry them
                raise RuntimeError("http.response.pathsend with trailers")
            done = self.conn.loop.create_future()
            self.conn.respond(self, head, True, (self.file, count, done))
            self.response_done = True
            await done
        finally:
            self.file.close()

    def stack(self) -> str:
        """Where the app's task is awaiting, outermost first (request_timeout's log).

        A suspended task's own stack is one frame; the rest of the chain is in
        each coroutine's ``cr_await`` (``gi_yieldfrom`` for generators).
        """
        frames: List[traceback.FrameSummary] = []
        awaited: Any = self.task.get_coro() if self.task is not None else None
        while awaited is not None:
            frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
            if frame is None:
                break       # a Future, or a C-level awaitable: the end of the chain
            frames.append(traceback.FrameSummary(frame.f_code.co_filename, frame.f_lineno,
                                                 frame.f_code.co_name))
            awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
        text = "".join(traceback.format_list(frames)).rstrip()
        return f"{text}\n  awaiting {awaited!r}" if awaited is not None else text

    def describe(self) -> str:
        r = self.request
        return f'"{r.method} {r.target} {r.version}"'

    def shown_as(self) -> str:
        """For top and status (show_requests): the request line and its client."""
        return f"{self.describe()} from {client(self.scope.get('client') or '')}"

