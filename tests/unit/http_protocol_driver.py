"""Drives an HttpProtocol the way an adapter does, in memory: no socket, selector or loop.

:class:`Driver` performs each action the protocol answers: "sends" into a
bytearray (at most ``send_cap`` bytes per send, as a full socket buffer
would), runs a responder for each complete request, counts rejections and
records how the connection ended.  A responder is a function
``(request, body, keep_alive) -> iterator of respond() argument tuples``;
:func:`wsgi` makes one from a WSGI app through the real Exchange, as the
selector connection does, and :func:`reply` one from fixed parts.
"""

from __future__ import annotations

import io
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from prefork.servers.http import protocol as p
from prefork.servers.http.environ import base_environ, build_environ
from prefork.servers.http.exchange import Exchange, FileWrapper
from prefork.servers.http.parser import Limits, Request
from prefork.servers.http.protocol import HttpProtocol
from prefork.servers.http.response import CONTINUE

T0 = 1000.0          # an arbitrary monotonic origin
ABORT = "abort"      # what a responder yields for "the app failed after output left"

Respond = Tuple[bytes, bool, bool, Optional[tuple]]
Responder = Callable[[Request, bytes, bool], Iterator]


def reply(*parts: bytes, keep_alive: Optional[bool] = None, file: Optional[tuple] = None,
          abort_after: Optional[int] = None) -> Responder:
    """A responder answering every request with ``parts`` (one respond() each); a
    Content-Length response whose framing keeps the request's keep-alive unless
    ``keep_alive`` says otherwise."""

    def responder(request: Request, body: bytes, allowed: bool) -> Iterator:
        ka = allowed if keep_alive is None else keep_alive and allowed
        for n, data in enumerate(parts):
            if abort_after is not None and n == abort_after:
                yield ABORT
                return
            last = n == len(parts) - 1
            yield data, last, ka, file if last else None
    return responder


def echo(request: Request, body: bytes, allowed: bool) -> Iterator:
    """One response naming the request, framed by Content-Length."""
    text = f"{request.method} {request.target} {len(body)}".encode() + b" " + body
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n" % len(text)
    yield head + (b"" if allowed else b"Connection: close\r\n") + b"\r\n" + text, True, \
        allowed, None


_BASE = base_environ(("127.0.0.1", 8000), False, "", FileWrapper)


def wsgi(app: Callable, high_water: int = 256 * 1024) -> Responder:
    """A responder running ``app`` through the real Exchange, as connection.py does."""

    def responder(request: Request, body: bytes, allowed: bool) -> Iterator:
        environ = build_environ(_BASE, request, io.BytesIO(body), len(body), ("10.0.0.1", 1))
        exchange = Exchange(app, environ, request, high_water, allowed)
        exchange.run()
        try:
            while True:
                if exchange.aborted:
                    yield ABORT
                    return
                yield exchange.take_output(), exchange.done, exchange.keep_alive, exchange.file
                if exchange.done:
                    return
                exchange.pump()
        finally:
            exchange.release()
    return responder


class Driver:
    """One connection's protocol, with the adapter's side done in memory."""

    def __init__(self, limits: Limits = Limits(), responder: Responder = echo, *,
                 send_cap: int = 1 << 30, header_timeout: float = 10.0,
                 client_timeout: float = 30.0, keepalive: float = 5.0,
                 now: float = T0, hold: bool = False) -> None:
        self.proto = HttpProtocol(limits, header_timeout, client_timeout, keepalive, now)
        self.now = now
        self.responder = responder
        self.send_cap = send_cap
        self.hold = hold            # a thread worker: the app's output comes with app_done()
        self.sent = bytearray()
        self.requests: List[Tuple[str, str, bytes]] = []   # what reached the app
        self.heads: List[Request] = []
        self.rejected: List[int] = []
        self.actions: List[str] = []
        self.continues = 0
        self.finished = 0
        self.end: Optional[str] = None    # "close" or "reset"
        self.shut = False                 # our write side is shut (lingering)
        self.unread: List[bytes] = []     # in the socket, not read yet (LATE_READ takes it)
        self.files: Dict[int, bytes] = {}
        self.body: Optional[bytearray] = None
        self._app: Optional[Iterator] = None
        self.running = False

    # -- events --------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        assert self.end is None, "fed after the close"
        self.perform(self.proto.received(data, self.now))

    def eof(self) -> None:
        self.perform(self.proto.eof())

    def writable(self) -> None:
        assert self.proto.state == p.WRITE, self.proto.state
        self.perform(self.proto.writable())

    def drain(self) -> None:
        """The client reads everything: write until the protocol stops waiting to write."""
        while self.end is None and self.proto.state == p.WRITE:
            self.writable()

    def tick(self, now: float) -> None:
        self.now = max(self.now, now)
        action = self.proto.tick(now)
        if action == p.LATE_READ:
            self.actions.append("LATE_READ")
            while self.unread and self.end is None and self.proto.wants == p.WANT_READ:
                self.feed(self.unread.pop(0))
            if self.end is not None:
                return
            action = self.proto.expire()
        self.perform(action)

    def stop(self) -> bool:
        return self.proto.stop()

    def app_done(self) -> None:
        """A held job finished (a thread worker's on_done)."""
        assert self.running
        self.running = False
        self.perform(self._respond())

    # -- actions -------------------------------------------------------------

    def perform(self, action: int) -> None:
        proto = self.proto
        while True:
            self.actions.append(p.ACTIONS[action])
            if action == p.WAIT:
                # Waiting for nothing is only right while a job runs.
                assert proto.wants or self.running or proto.state == p.CLOSED, proto.state
                return
            if action == p.SEND:
                out = bytes(proto.out)
                count = min(len(out), self.send_cap)
                assert not self.shut, "send after shutdown"
                self.sent += out[:count]
                action = proto.sent(count, self.now)
            elif action == p.SENDFILE:
                fd, offset, count = proto.file
                data = self.files[fd][offset:offset + count][:self.send_cap]
                self.sent += data
                ended = not data and count > 0 and len(self.files[fd]) <= offset
                action = proto.sent_file(len(data), self.now, ended)
            elif action == p.REQUEST_HEAD:
                self.heads.append(proto.request)
                self.body = bytearray()
                action = proto.next()
            elif action == p.BODY_DATA:
                self.body += proto.data
                action = proto.next()
            elif action == p.SEND_CONTINUE:
                self.sent += CONTINUE
                self.continues += 1
                action = proto.next()
            elif action == p.REQUEST:
                request = proto.request
                body = bytes(self.body or b"")
                self.body = None
                self.requests.append((request.method, request.target, body))
                self._app = self.responder(request, body, proto.keep_alive)
                if self.hold:
                    self.running = True
                    return
                action = self._respond()
            elif action == p.PRODUCE:
                if self.hold:
                    self.running = True
                    return
                action = self._respond()
            elif action == p.FINISHED:
                self.finished += 1
                action = proto.finish(self.now)
            elif action == p.REJECT:
                self.rejected.append(proto.status)
                action = p.SEND
            elif action == p.LINGER:
                self.shut = True
                return
            elif action == p.CLOSE:
                self.end = "close"
                return
            elif action == p.RESET:
                self.end = "reset"
                return
            else:
                raise AssertionError(f"unexpected action {p.ACTIONS[action]}")

    def _respond(self) -> int:
        step = next(self._app)
        if step == ABORT:
            return self.proto.abort()
        return self.proto.respond(*step)


def converse(pieces: Sequence[bytes], limits: Limits = Limits(), responder: Responder = echo,
             send_cap: int = 1 << 30, stall: bool = False) -> Driver:
    """A whole conversation: ``pieces`` read one by one whenever the protocol reads
    (a response waiting to be written is read by the client first), then the
    client hangs up, after a silence past every deadline if ``stall``."""
    d = Driver(limits, responder, send_cap=send_cap)
    for piece in pieces:
        d.drain()
        if d.end is not None:
            break
        d.feed(piece)
    d.drain()
    if stall and d.end is None:
        d.tick(d.now + 3600)
        d.drain()
    if d.end is None:
        d.eof()
    d.drain()
    assert d.end is not None, (d.proto.state, d.actions[-10:])
    return d
