"""One HTTP connection, owned by the worker's selector loop.

States, and what the connection waits for in each:

  HEAD     a request head (idle keep-alive, or a head arriving): readable
  BODY     the rest of a request body: readable
  APP      a job (the WSGI app) is running: nothing
  WRITE    the socket to take more of the response: writable
  CLOSING  the client to finish sending after we shut down our side: readable

Requests are read, whole, before the app runs, and responses wait in the
selector for a slow reader, so no client holds a worker by being slow.
Deadlines are checked by :meth:`tick`, which the loop calls about twice a
second: header_timeout from the first byte of a head (408), client_timeout
of no progress on a body (408) or a response (reset), keepalive for an idle
connection.
"""

from __future__ import annotations

import os
import selectors
import socket
import struct
import tempfile
import time
from typing import Any, Optional

from ...addresses import client
from .exchange import Exchange
from .parser import ProtocolError, Request, RequestParser
from .response import CONTINUE, error_response

HEAD, BODY, APP, WRITE, CLOSING = "head", "body", "app", "write", "closing"
RECV_SIZE = 64 * 1024   # below malloc's mmap threshold: no mmap/munmap per recv
LINGER = 2.0           # seconds to keep reading after our close, so our last reply is not reset
_RESET = struct.pack("ii", 1, 0)   # struct linger {l_onoff 1, l_linger 0}: close sends RST


class EmptyInput:
    """``wsgi.input`` of a request without a body: stateless, so one serves all."""

    __slots__ = ()

    def read(self, size: int = -1) -> bytes:
        return b""

    def readline(self, size: int = -1) -> bytes:
        return b""

    def readlines(self, hint: int = -1) -> list:
        return []

    def __iter__(self) -> "EmptyInput":
        return self

    def __next__(self) -> bytes:
        raise StopIteration


EMPTY_INPUT = EmptyInput()


class HttpConnection:
    """Drive one client socket through requests; see the module docstring."""

    __slots__ = ("sock", "address", "server", "loop", "parser", "state", "closed", "stopping",
                 "request", "body", "exchange", "out", "started", "deadline", "_events",
                 "_advancing", "_in_job", "__weakref__")

    def __init__(self, sock: socket.socket, address: Any, server: Any, loop: Any) -> None:
        self.sock = sock
        self.address = address
        self.server = server
        self.loop = loop
        self.parser = RequestParser(server.limits)
        self.state = HEAD
        self.closed = False
        self.stopping = False
        self.request: Optional[Request] = None
        self.body: Any = None
        self.exchange: Optional[Exchange] = None
        self.out: Any = b""
        self.started = 0.0                 # when the current request's head began
        self.deadline = time.monotonic() + server.header_timeout
        self._events = 0
        self._advancing = False
        self._in_job = False     # a job holds the exchange: only it may close the iterable
        loop.park(self)
        # The request usually arrived with the connection (TCP_DEFER_ACCEPT
        # waits for it): read it now, and register only if it has not.
        self._on_readable()
        if not self.closed and not self._events and self.state in (HEAD, BODY):
            self._want(selectors.EVENT_READ)

    # -- loop callbacks ------------------------------------------------------

    def _on_ready(self) -> None:
        if self.state == WRITE:
            self._flush()
        else:
            self._on_readable()

    def _on_readable(self) -> None:
        try:
            data = self.sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close()
            return
        if not data:
            self.close()
            return
        if self.state == CLOSING:
            return   # discarded: we already answered and said we close
        if self.state == HEAD and not self.parser.buffered:
            self.started = time.monotonic()
            self.deadline = self.started + self.server.header_timeout
        self.parser.feed(data)
        self._advance()

    def tick(self, now: float) -> None:
        if now < self.deadline or self.state == APP:
            return
        if self.state in (HEAD, BODY) and self._read_late():
            return
        if self.state == HEAD and self.parser.buffered or self.state == BODY:
            self._reject(408)
        elif self.state == WRITE:
            self._reset()  # a stalled reader
        else:
            self.close()   # idle keep-alive, or lingering done

    def stop(self) -> None:
        """Graceful stop: a connection ends after a response that says Connection: close.

        An idle keep-alive connection is not closed at once: its client may
        have sent the next request already, and closing under it would turn
        that request into an error.  Its next request is answered with
        Connection: close; if none comes, it closes at its keep-alive deadline.
        """
        self.stopping = True
        exchange = self.exchange
        if exchange is not None and not exchange.head_done:
            exchange.keep_alive = False

    def hurry(self, deadline: float) -> None:
        """The worker is orphaned: if idle (or done and lingering), close by ``deadline``."""
        if self.state == CLOSING or (self.state == HEAD and not self.parser.buffered):
            self.deadline = min(self.deadline, deadline)

    def _read_late(self) -> bool:
        """Before a read deadline is enforced, take what the client sent meanwhile.

        The deadline can pass while this worker could not read: a sync worker
        busy with another request longer than ``keepalive``, or a stall.  A
        request that arrived in time is then served, not reset with its
        connection.  True if the connection moved on (served, closed, or its
        deadline renewed); False if nothing came and the deadline stands.
        """
        deadline = self.deadline
        self._on_readable()
        return self.closed or self.state not in (HEAD, BODY) or self.deadline != deadline

    # -- reading requests ----------------------------------------------------

    def _advance(self) -> None:
        """Parse what is buffered; run every request that is complete (pipelining)."""
        if self._advancing:
            return
        self._advancing = True
        try:
            while not self.closed and self.state in (HEAD, BODY):
                if not self._step():
                    break
        finally:
            self._advancing = False

    def _step(self) -> bool:
        """Make one step of progress; False when more bytes are needed."""
        server = self.server
        try:
            if self.state == HEAD:
                request = self.parser.next_head()
                if request is None:
                    return False
                self.request = request
                if not self.parser.in_body:
                    self.body = EMPTY_INPUT
                    self._dispatch(0)
                    return True
                self.body = tempfile.SpooledTemporaryFile(max_size=server.body_buffer_size)
                self.state = BODY
                if request.expect_continue and not self.parser.buffered:
                    self._send_small(CONTINUE)
            data, done = self.parser.read_body()
        except ProtocolError as exc:
            self._reject(exc.status)
            return False
        if data:
            self.body.write(data)
        if not done:
            self.deadline = time.monotonic() + server.client_timeout
            return False
        length = self.body.tell()
        self.body.seek(0)
        self._dispatch(length)
        return True

    def _dispatch(self, body_length: int) -> None:
        server = self.server
        environ = server.environ(self.request, self.body, body_length, self.address)
        self.exchange = Exchange(server.app, environ, self.request, server.high_water)
        if self.stopping:
            self.exchange.keep_alive = False    # the response says Connection: close
        self.state = APP
        if self.loop.multithread:
            self._want(0)   # not readable while the app runs: input waits in the kernel
        self._in_job = True
        self.loop.run_job(self.exchange.run, self._after_job, what=self._describe)

    # -- writing responses ---------------------------------------------------

    def _after_job(self) -> None:
        self._in_job = False
        if self.closed:
            self.exchange.release()
            return
        exchange = self.exchange
        if exchange.aborted:
            self._log()
            self.close()
            return
        self.out = exchange.take_output()
        self._flush()

    def _flush(self) -> None:
        """Send what is pending; then more of the response, the next request, or the close."""
        if self.out and not self._send_pending():
            return
        exchange = self.exchange
        if exchange is None:        # a server-made reply (4xx): then close
            self._linger()
            return
        if exchange.file and not self._sendfile():
            return
        if not exchange.done:
            self.state = APP
            if self.loop.multithread:
                self._want(0)
            self._in_job = True
            self.loop.run_job(exchange.pump, self._after_job, counts=False, what=self._describe)
            return
        if self.server.access_log is not None:
            self._log()
        exchange.release()
        self.exchange = self.body = None
        # Stopping, but this response went out promising keep-alive (its head
        # left before the stop): the client may send again, so the connection
        # stays for one more request, which will say Connection: close.
        if not exchange.keep_alive:
            if not self.request.keep_alive and not self.parser.buffered:
                self.close()     # the client asked for the close and sent nothing more
            else:
                self._linger()
            return
        self.state = HEAD
        self.started = 0.0
        self.deadline = time.monotonic() + self.server.keepalive
        self._want(selectors.EVENT_READ)
        if self.parser.buffered:
            self.started = time.monotonic()
            self.deadline = self.started + self.server.header_timeout
            self._advance()

    def _send_pending(self) -> bool:
        """Send ``self.out``; True when all of it left."""
        try:
            sent = self.sock.send(self.out)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self.close()
            return False
        if sent == len(self.out):
            self.out = b""
            return True
        self.out = memoryview(self.out)[sent:]
        self._wait_writable()
        return False

    def _sendfile(self) -> bool:
        fd, offset, count = self.exchange.file
        try:
            sent = os.sendfile(self.sock.fileno(), fd, offset, count)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self.close()
            return False
        if sent == count or sent == 0 and count and self._file_shrank(fd, offset):
            self.exchange.file = None
            return True
        self.exchange.file = (fd, offset + sent, count - sent)
        self._wait_writable()
        return False

    @staticmethod
    def _file_shrank(fd: int, offset: int) -> bool:
        return os.fstat(fd).st_size <= offset

    def _wait_writable(self) -> None:
        self.state = WRITE
        self.deadline = time.monotonic() + self.server.client_timeout
        self._want(selectors.EVENT_WRITE)

    def _send_small(self, data: bytes) -> None:
        try:
            self.sock.send(data)   # a few bytes into an empty buffer: it fits
        except OSError:
            pass

    # -- errors and closing --------------------------------------------------

    def _reject(self, status: int) -> None:
        """Answer a request the server refuses (4xx/5xx) and close."""
        self.exchange = None
        self.server.log_rejection(self, status)
        self.out = error_response(status)
        self._flush()

    def _linger(self) -> None:
        """Close our side, then read until the client closes, so it sees our last bytes."""
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self.close()
            return
        self.state = CLOSING
        self.deadline = time.monotonic() + LINGER
        self._want(selectors.EVENT_READ)

    def _reset(self) -> None:
        """Close with a reset (SO_LINGER 0): the kernel drops what it still holds to send.

        A plain close would leave it queued in an orphaned socket: up to a
        whole send buffer (4 MiB) that a client keeping its end open and
        reading a few bytes a second pins for hours, so cutting slow readers
        at client_timeout would free nothing.
        """
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
        except OSError:
            pass
        self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._events:
            self.loop.selector.unregister(self.sock)
        self.loop.forget(self)
        self.sock.close()
        if self.exchange is not None and not self._in_job:
            self.exchange.release()

    def _want(self, events: int) -> None:
        if events == self._events or self.closed:
            return
        selector = self.loop.selector
        if not self._events:
            selector.register(self.sock, events, self._on_ready)
        elif not events:
            selector.unregister(self.sock)
        else:
            selector.modify(self.sock, events, self._on_ready)
        self._events = events

    def _log(self) -> None:
        self.server.log_access(self, self.request, self.exchange)

    def _describe(self) -> str:
        """The request a job runs, for request_timeout's log line."""
        r = self.request
        return f'"{r.method} {r.target} {r.version}" from {client(self.address)}'
