"""A connection between accept and its server: the PROXY header, then the TLS handshake.

An :class:`Arrival` is parked in the worker's loop like an HTTP connection
(it counts toward ``worker_connections``, gets ``tick``, ``stop`` and
``hurry``) and waits there without blocking for each byte it needs:

1. PROXY (from a peer allowed to send one): the header is peeked at and
   only its own bytes are consumed, so what follows (a ClientHello, a
   request) stays in the socket for the next reader.  Bytes that cannot
   start a header refuse the connection at once.
2. TLS: the first byte is peeked at.  A TLS handshake record begins with
   0x16; anything else is plain text sent to a TLS address, answered with
   a 400 on HTTP listeners (or just closed) and never seen by the app.
3. The handshake itself, ``do_handshake()`` on a non-blocking SSLSocket,
   when the loop is a selector loop; an asyncio server does its handshake
   in asyncio's own TLS transport (``handshake_inside``).

Everything must be done within ``header_timeout`` of the accept; a peer
that sends nothing, or a ClientHello byte by byte, costs the worker one
parked object, never a blocked thread.  Then the connection goes to the
inner server's ``accepted`` with the client's address (the PROXY source
when there was one).
"""

from __future__ import annotations

import logging
import selectors
import socket
import ssl
import time
from typing import Any, Callable, Optional

from .proxy_header import ProxyError, parse

logger = logging.getLogger("prefork")

PEEK = 4096                 # more than any PROXY header prefork accepts
HANDSHAKE_RECORD = 0x16     # RFC 8446 5.1: ContentType handshake
PLAIN_ON_TLS = (b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n"
                b"Content-Length: 42\r\nConnection: close\r\n\r\n"
                b"This address speaks TLS: use https:// URL\n")
PROXY, SNIFF, HANDSHAKE, DONE = "proxy", "sniff", "handshake", "done"


class Arrival:
    """One arriving connection; see the module docstring."""

    __slots__ = ("edge", "sock", "address", "loop", "stage", "header", "deadline",
                 "stopping", "_watch")

    def __init__(self, edge: Any, sock: socket.socket, address: Any, loop: Any,
                 proxied: bool) -> None:
        self.edge, self.sock, self.address, self.loop = edge, sock, address, loop
        self.stage = PROXY if proxied else SNIFF
        self.header = b""               # PROXY header bytes consumed so far
        self.deadline = time.monotonic() + edge.timeout
        self.stopping = False
        self._watch = Watch(loop)

    def start(self) -> None:
        self.sock.setblocking(False)
        self.loop.park(self)
        self._step()

    # -- the loop's calls (contracts.Parked) -----------------------------------

    def tick(self, now: float) -> None:
        if now >= self.deadline:
            self._refuse(f"nothing complete within {self.edge.timeout:g} s ({self.stage})")

    def stop(self) -> None:
        self.stopping = True      # it goes on; its connection is stopped once handed over

    def hurry(self, deadline: float) -> None:
        self.deadline = min(self.deadline, deadline)

    # -- the stages ----------------------------------------------------------------

    def _step(self) -> None:
        if self.stage is DONE:
            return                # refused already; an event from the same wakeup
        try:
            if self.stage is PROXY and not self._proxy():
                return
            if self.stage is SNIFF and not self._sniff():
                return
            if self.stage is HANDSHAKE and not self._handshake():
                return
        except ProxyError as exc:
            self._refuse(f"bad PROXY header: {exc}")
            return
        except ssl.SSLError as exc:
            self._refuse(f"TLS handshake failed: {exc.reason or exc}")
            return
        except OSError as exc:
            self._refuse(f"connection lost: {exc.strerror or exc}")
            return
        self._hand_over()

    def _proxy(self) -> bool:
        data = self._peek(PEEK)
        if data is None:
            return False
        info = parse(self.header + data, self.edge.proxy)
        if info is None:
            # Not complete yet: everything seen belongs to the header.  Watch for the
            # rest (the peek found these bytes there, so nothing may be watching yet).
            self.header += self.sock.recv(len(data))
            self._watch.on(self.sock, selectors.EVENT_READ, self._step)
            return False
        _consume(self.sock, info.length - len(self.header))
        if info.source is not None:
            self.address = info.source
        self.stage = SNIFF if self.edge.tls is not None else DONE
        return True

    def _sniff(self) -> bool:
        if self.edge.tls is None:
            self.stage = DONE
            return True
        data = self._peek(1)
        if data is None:
            return False
        if data[0] != HANDSHAKE_RECORD:
            if self.edge.http:
                try:
                    self.sock.send(PLAIN_ON_TLS)
                except OSError:
                    pass
            self._refuse("plain text sent to a TLS address")
            return False
        if self.edge.handshake_inside:
            self.stage = DONE
            return True
        self._watch.stop()        # wrapping moves the fd to a new socket object
        self.sock = self.edge.tls.wrap_socket(self.sock, server_side=True,
                                              do_handshake_on_connect=False)
        self.stage = HANDSHAKE
        return True

    def _handshake(self) -> bool:
        try:
            self.sock.do_handshake()
        except ssl.SSLWantReadError:
            self._watch.on(self.sock, selectors.EVENT_READ, self._step)
            return False
        except ssl.SSLWantWriteError:
            self._watch.on(self.sock, selectors.EVENT_WRITE, self._step)
            return False
        self.stage = DONE
        return True

    def _peek(self, size: int) -> Optional[bytes]:
        """What the socket holds (without taking it); None: wait for it.  EOF is an
        OSError: the peer left before it was through."""
        try:
            data = self.sock.recv(size, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            self._watch.on(self.sock, selectors.EVENT_READ, self._step)
            return None
        if not data:
            raise OSError("the peer closed the connection")
        return data

    # -- the end -----------------------------------------------------------------

    def _hand_over(self) -> None:
        self._watch.stop()
        self.loop.forget(self)
        if self.edge.handshake_inside:     # the handshake is still to come, by our deadline
            connection = self.edge.inner.accepted(self.sock, self.address, self.loop,
                                                  deadline=self.deadline)
        else:
            connection = self.edge.inner.accepted(self.sock, self.address, self.loop)
        if self.stopping and connection is not None:
            connection.stop()

    def _refuse(self, why: str) -> None:
        logger.debug("connection from %s refused: %s", self.address, why)
        self._watch.stop()
        self.loop.forget(self)
        self.stage = DONE
        try:
            self.sock.close()
        except OSError:
            pass


def _consume(sock: socket.socket, count: int) -> None:
    """Take ``count`` bytes that a peek showed are there."""
    while count > 0:
        count -= len(sock.recv(count))


class Watch:
    """One socket watched for one event, on a selector loop or an asyncio loop."""

    __slots__ = ("selector", "aio", "sock", "fd", "events")

    def __init__(self, loop: Any) -> None:
        self.selector: Optional[selectors.BaseSelector] = getattr(loop, "selector", None)
        self.aio = None if self.selector is not None else loop.loop
        self.sock: Optional[socket.socket] = None
        self.fd = -1               # asyncio's loops are told fds; kept for after a close
        self.events = 0

    def on(self, sock: socket.socket, events: int, callback: Callable[[], None]) -> None:
        if sock is self.sock and events == self.events:
            return
        self.stop()
        if self.selector is not None:
            self.selector.register(sock, events, callback)
        elif events == selectors.EVENT_READ:
            self.aio.add_reader(sock.fileno(), callback)
        else:
            self.aio.add_writer(sock.fileno(), callback)
        self.sock, self.fd, self.events = sock, sock.fileno(), events

    def stop(self) -> None:
        sock, self.sock = self.sock, None
        if sock is None:
            return
        if self.selector is not None:
            self.selector.unregister(sock)
        elif self.events == selectors.EVENT_READ:
            self.aio.remove_reader(self.fd)
        else:
            self.aio.remove_writer(self.fd)
